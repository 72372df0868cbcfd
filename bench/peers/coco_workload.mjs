// The benchmark's workload through coco (npm coco-cashu-core). Started by bench/workload.py as
// `node bench/peers/coco_workload.mjs`; the protocol, timing and fee meter are common.mjs's.
//
// Each wallet is its own Manager (initializeCoco) with its own MemoryRepositories (nothing on
// disk) and its own random 64-byte seed (deterministic NUT-13 outputs, coco's only kind). The
// background watchers and the mint-quote processor are off: the workload drives every
// operation itself, in the foreground (with them on, the processor would race to redeem the
// same paid quote).
//
// Rate limiting off: coco's Manager builds a MintRequestProvider with a token bucket per mint
// (capacity 20, refill 20 per minute; a round takes 6 requests, so from the fourth round on
// every request would wait about 3 s) and CocoConfig has no option for it. The provider skips
// the bucket for paths starting with one of its `bypassPathPrefixes`: every wallet sets that to
// ["/"] on its provider before it talks to the mint, drops any limiter made so far, and checks
// that the limiter it got bypasses the mint's endpoints.
//
//     mint     quotes.createMintQuote, quotes.redeemMintQuote (again every 10 ms while the
//              mint answers "quote not paid"; FakeWallet pays at once)
//     send     send.prepareSend(7), send.executePreparedSend (swaps unless proofs add up to 7
//              exactly), getEncodedToken (V4)
//     receive  wallet.receive(token)
//     melt     quotes.createMeltQuote, quotes.payMeltQuote (swaps first unless the selected
//              proofs add up to amount + fee reserve + input fee exactly)

import { randomBytes } from 'node:crypto';

import { getEncodedToken, initializeCoco, MemoryRepositories } from 'coco-cashu-core';

import { isQuoteNotPaid, main, packageVersion, sleep } from './common.mjs';

const BYPASS_ALL = ['/'];

function rateLimitingOff(manager) {
  const provider = manager.mintRequestProvider;
  if (!provider?.options || !(provider.limiters instanceof Map)) {
    throw new Error('coco: no MintRequestProvider where 1.1.2-rc.39 keeps it; check the pin');
  }
  provider.options.bypassPathPrefixes = BYPASS_ALL;
  provider.clearAll();
}

function checkRateLimitingOff(manager) {
  const limiters = [...manager.mintRequestProvider.limiters.values()];
  if (limiters.length === 0) throw new Error('coco: no rate limiter was made for the mint');
  for (const limiter of limiters) {
    for (const path of ['/v1/swap', '/v1/melt/bolt11', '/v1/mint/bolt11', '/v1/keys']) {
      if (!limiter.shouldBypass(path)) throw new Error(`coco: ${path} is still rate limited`);
    }
  }
}

async function newWallet(mintUrl) {
  const seed = new Uint8Array(randomBytes(64));
  const repo = new MemoryRepositories();
  const manager = await initializeCoco({
    repo,
    seedGetter: async () => seed,
    watchers: { mintQuoteWatcher: { disabled: true }, proofStateWatcher: { disabled: true } },
    processors: { mintQuoteProcessor: { disabled: true } },
  });
  rateLimitingOff(manager);
  await manager.mint.addMint(mintUrl, { trusted: true });
  checkRateLimitingOff(manager);
  const deadline = () => performance.now() + 30_000;

  return {
    async mint(amount) {
      const quote = await manager.quotes.createMintQuote(mintUrl, amount);
      const until = deadline();
      for (;;) {
        try {
          await manager.quotes.redeemMintQuote(mintUrl, quote.quote);
          return;
        } catch (error) {
          if (!isQuoteNotPaid(error) || performance.now() > until) throw error;
          await sleep(10);
        }
      }
    },
    async send(amount) {
      const prepared = await manager.send.prepareSend(mintUrl, amount);
      const { token } = await manager.send.executePreparedSend(prepared.id);
      return getEncodedToken(token);
    },
    async receive(token) {
      await manager.wallet.receive(token);
    },
    async melt(invoice) {
      const quote = await manager.quotes.createMeltQuote(mintUrl, invoice);
      await manager.quotes.payMeltQuote(mintUrl, quote.quote);
    },
    async balance() {
      const balances = await manager.wallet.getBalances();
      return Object.values(balances).reduce((sum, sat) => sum + sat, 0);
    },
    async proofCount() {
      return (await repo.proofRepository.getAllReadyProofs()).length;
    },
    async close() {
      await manager.dispose();
    },
  };
}

await main({
  name: 'coco',
  version: packageVersion('./node_modules/coco-cashu-core/package.json'),
  details: {
    cashu_ts: packageVersion(
      './node_modules/coco-cashu-core/node_modules/@cashu/cashu-ts/package.json',
      './node_modules/@cashu/cashu-ts/package.json',
    ),
    rate_limiting: 'off (MintRequestProvider bypassPathPrefixes ["/"])',
  },
  newWallet,
});
