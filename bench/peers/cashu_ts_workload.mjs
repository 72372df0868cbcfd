// The benchmark's workload through cashu-ts (npm @cashu/cashu-ts) alone: a Wallet per wallet,
// its proofs in an array in memory (no store, no seed: the library's default random secrets).
// Started by bench/workload.py as `node bench/peers/cashu_ts_workload.mjs`; the protocol,
// timing and fee meter are common.mjs's.
//
//     mint     createMintQuoteBolt11, mintProofsBolt11 (again every 10 ms while the mint
//              answers "quote not paid"; FakeWallet pays at once)
//     send     wallet.send(7, proofs) (offline when proofs add up to 7 exactly, else a swap),
//              getEncodedToken (V4)
//     receive  wallet.receive(token)
//     melt     createMeltQuoteBolt11, selectProofsToSend(amount + fee reserve, include fees),
//              meltProofsBolt11 (NUT-08 blanks for the change; no swap first)

import { Amount, getEncodedToken, Wallet } from '@cashu/cashu-ts';

import { isQuoteNotPaid, main, packageVersion, sleep } from './common.mjs';

const sat = (amount) => Amount.from(amount).toNumber();

async function newWallet(mintUrl) {
  const wallet = new Wallet(mintUrl, { unit: 'sat' });
  await wallet.loadMint();
  let proofs = [];

  return {
    async mint(amount) {
      const quote = await wallet.createMintQuoteBolt11(amount);
      const until = performance.now() + 30_000;
      for (;;) {
        try {
          proofs = proofs.concat(await wallet.mintProofsBolt11(amount, quote));
          return;
        } catch (error) {
          if (!isQuoteNotPaid(error) || performance.now() > until) throw error;
          await sleep(10);
        }
      }
    },
    async send(amount) {
      const { keep, send } = await wallet.send(amount, proofs);
      proofs = keep;
      return getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: send });
    },
    async receive(token) {
      proofs = proofs.concat(await wallet.receive(token));
    },
    async melt(invoice) {
      const quote = await wallet.createMeltQuoteBolt11(invoice);
      const total = Amount.from(quote.amount).add(quote.fee_reserve);
      const { keep, send } = wallet.selectProofsToSend(proofs, total, true);
      const { quote: paid, change } = await wallet.meltProofsBolt11(quote, send);
      if (String(paid.state).toUpperCase() !== 'PAID') throw new Error(`melt ${paid.state}`);
      proofs = keep.concat(change);
    },
    async balance() {
      return proofs.reduce((sum, p) => sum + sat(p.amount), 0);
    },
    async proofCount() {
      return proofs.length;
    },
    async close() {},
  };
}

await main({
  name: 'cashu-ts',
  version: packageVersion('./node_modules/@cashu/cashu-ts/package.json'),
  details: {},
  newWallet,
});
