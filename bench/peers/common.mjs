// What bench/peers/coco_workload.mjs and bench/peers/cashu_ts_workload.mjs share: the
// request/reply protocol with bench/workload.py, the rounds and their timing, and a meter on
// fetch that counts every request and the input fees the mint charged.
//
// Protocol. The first line on stdin is one JSON request:
//
//     {"mint_url": ..., "rounds": 10, "repeat": 3, "warmup_invoice": "lnbc...",
//      "invoices": [["lnbc...", ...one per round], ...one list per repetition],
//      "stepped": false}
//
// The script runs an untimed warm-up round with a pair of wallets of its own, then per
// repetition a fresh pair of wallets (A and B) runs the rounds: A mints 100 sat, A sends 7 sat
// as a token, B receives it, A melts a 5 sat invoice. It writes one JSON reply as the last line
// on stdout ({"ok": true, "result": ...} or {"ok": false, "error": ...}), in the shape of
// bench/nutshell_workload.py's: times in seconds, per kind, one entry per round. Anything else
// (library logs, errors) goes to stderr.
//
// With "stepped": true the caller takes turns with other ways round by round: after the
// warm-up the script writes {"ready": true}, then before each timed round it waits for a line
// on stdin ("round"), runs the round and writes {"round": i, "rep": r, "ms": {...}}. "stop" or
// the end of stdin ends it early (an error reply).
//
// Each operation is timed here with performance.now() (monotonic, ms), at the boundaries the
// floor and Nutshell ways use: mint = quote + mint with the quote paid, send = a 7 sat token
// (any swap and the encoding included), receive = redeem that token in wallet B, melt = melt
// quote + melt of a 5 sat invoice.
//
// Fees. The meter wraps globalThis.fetch (both libraries call the global fetch). For every
// POST /v1/swap and /v1/melt/bolt11 the mint answered 2xx it charges
// ceil(sum of the inputs' input_fee_ppk / 1000), the keysets' fees read from /v1/keysets at
// the start; for a melt it also takes the quote's amount and the change from the answer:
// routing = inputs - input fee - amount - change. Request bodies and answers are read after
// the round's timing, never inside it. The balance check is workload.py's:
// fees_by_balance = minted - melted - routing - (A's balance + B's balance).

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

export const KINDS = ['mint', 'send', 'receive', 'melt'];
export const MINT_AMOUNT = 100;
export const SEND_AMOUNT = 7;
const FEE_PATHS = new Set(['/v1/swap', '/v1/melt/bolt11']);

// Library logs must not reach stdout: it carries the protocol.
for (const name of ['log', 'info', 'debug', 'warn']) console[name] = console.error.bind(console);

/** The version in the first of `paths` (relative to bench/peers) that exists. */
export function packageVersion(...paths) {
  for (const path of paths) {
    try {
      return JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')).version;
    } catch (error) {
      if (error.code !== 'ENOENT') throw error;
    }
  }
  return 'unknown';
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** True for the mint's "quote not paid" refusal (NUT-04 error code 20001). */
export function isQuoteNotPaid(error) {
  const text = `${error?.code ?? ''} ${error?.message ?? ''} ${error?.detail ?? ''}`;
  return error?.code === 20001 || /20001|not paid|unpaid/i.test(text);
}

/** Every request to the mint, and the input fees of those that spent inputs. */
export class MintMeter {
  constructor(mintUrl) {
    this.mintUrl = mintUrl;
    this.fetch = globalThis.fetch;
    this.feePpk = new Map();
    this.kind = 'setup';
    this.pending = [];
    this.reset();
  }

  reset() {
    this.fees = 0;
    this.feeRequests = 0;
    this.melted = 0;
    this.routing = 0;
    this.requests = Object.fromEntries([...KINDS, 'setup'].map((k) => [k, 0]));
  }

  async install() {
    const answer = await this.fetch(new URL('/v1/keysets', this.mintUrl));
    for (const keyset of (await answer.json()).keysets) {
      this.feePpk.set(keyset.id, keyset.input_fee_ppk ?? 0);
    }
    const original = this.fetch;
    globalThis.fetch = async (input, init) => {
      const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
      const method = (init?.method ?? input?.method ?? 'GET').toUpperCase();
      this.requests[this.kind] = (this.requests[this.kind] ?? 0) + 1;
      const response = await original(input, init);
      if (method === 'POST' && FEE_PATHS.has(url.pathname) && response.ok) {
        this.pending.push({ path: url.pathname, body: init?.body, answer: response.clone() });
      }
      return response;
    };
  }

  /** Counts what the requests since the last call cost (outside any timing). */
  async settle() {
    const pending = this.pending;
    this.pending = [];
    for (const { path, body, answer } of pending) {
      const inputs = JSON.parse(typeof body === 'string' ? body : new TextDecoder().decode(body))
        .inputs;
      const ppk = inputs.reduce((sum, p) => sum + this.ppkOf(p.id), 0);
      const fee = Math.ceil(ppk / 1000);
      this.fees += fee;
      this.feeRequests += 1;
      if (path === '/v1/melt/bolt11') {
        const melt = await answer.json();
        if (String(melt.state).toUpperCase() !== 'PAID') {
          throw new Error(`melt answered ${melt.state}`);
        }
        const paidIn = inputs.reduce((sum, p) => sum + Number(p.amount), 0);
        const change = (melt.change ?? []).reduce((sum, s) => sum + Number(s.amount), 0);
        this.melted += Number(melt.amount);
        this.routing += paidIn - fee - Number(melt.amount) - change;
      } else {
        await answer.body?.cancel();
      }
    }
  }

  ppkOf(id) {
    for (const [full, ppk] of this.feePpk) if (full.startsWith(id)) return ppk;
    throw new Error(`input of unknown keyset ${id}`);
  }
}

async function oneRound(meter, a, b, invoice) {
  const ms = {};
  let token;
  const steps = {
    mint: () => a.mint(MINT_AMOUNT),
    send: async () => {
      token = await a.send(SEND_AMOUNT);
    },
    receive: () => b.receive(token),
    melt: () => a.melt(invoice),
  };
  for (const kind of KINDS) {
    meter.kind = kind;
    const start = performance.now();
    await steps[kind]();
    ms[kind] = performance.now() - start;
  }
  meter.kind = 'setup';
  await meter.settle();
  return ms;
}

/**
 * Runs the workload for one library. `peer` is {name, version, details, newWallet(mintUrl,
 * label)}; a wallet has mint(amount), send(amount) -> token string, receive(token),
 * melt(invoice), balance() -> sat, proofCount() and close().
 */
export async function main(peer) {
  const reader = createInterface({ input: process.stdin, crlfDelay: Infinity });
  const lines = reader[Symbol.asyncIterator]();
  const write = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
  let reply;
  try {
    const first = await lines.next();
    if (first.done) throw new Error('no request on stdin');
    const request = JSON.parse(first.value);
    reply = { ok: true, result: await run(peer, request, lines, write) };
  } catch (error) {
    console.error(error?.stack ?? error);
    reply = { ok: false, error: `${error?.name ?? 'Error'}: ${error?.message ?? error}` };
  }
  write(reply);
  reader.close();
  process.exitCode = reply.ok ? 0 : 1;
  // Keep-alive sockets and library timers must not hold the process open.
  setTimeout(() => process.exit(process.exitCode), 200).unref();
}

async function run(peer, request, lines, write) {
  const url = request.mint_url;
  const meter = new MintMeter(url);
  await meter.install();

  // one untimed round: module loading, the JIT, first connections, the mint's keys
  const wa = await peer.newWallet(url, 'warmup-A');
  const wb = await peer.newWallet(url, 'warmup-B');
  await oneRound(meter, wa, wb, request.warmup_invoice);
  await wa.close();
  await wb.close();
  if (request.stepped) write({ ready: true });

  const reps = [];
  for (const [rep, invoices] of request.invoices.slice(0, request.repeat).entries()) {
    const a = await peer.newWallet(url, `rep${rep}-A`);
    const b = await peer.newWallet(url, `rep${rep}-B`);
    meter.reset();
    const times = Object.fromEntries(KINDS.map((k) => [k, []]));
    let elapsed = 0;
    for (const [i, invoice] of invoices.slice(0, request.rounds).entries()) {
      if (request.stepped) {
        const line = await lines.next();
        if (line.done || line.value.trim() !== 'round') {
          throw new Error(`told to stop before round ${i + 1} of repetition ${rep + 1}`);
        }
      }
      const ms = await oneRound(meter, a, b, invoice);
      for (const kind of KINDS) {
        times[kind].push(ms[kind] / 1000);
        elapsed += ms[kind] / 1000;
      }
      if (request.stepped) write({ round: i, rep, ms });
    }
    const minted = MINT_AMOUNT * request.rounds;
    const balance = (await a.balance()) + (await b.balance());
    reps.push({
      times,
      elapsed,
      fees: meter.fees,
      fee_requests: meter.feeRequests,
      minted,
      melted: meter.melted,
      routing: meter.routing,
      balance,
      fees_by_balance: minted - meter.melted - meter.routing - balance,
      proofs_kept: (await a.proofCount()) + (await b.proofCount()),
      requests: Object.fromEntries(KINDS.map((k) => [k, meter.requests[k]])),
    });
    await a.close();
    await b.close();
  }
  return {
    version: peer.version,
    node: process.version,
    ...peer.details,
    reps,
  };
}
