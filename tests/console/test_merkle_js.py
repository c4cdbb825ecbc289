"""The console's in-browser proof checks against RFC 6962/9162 vectors, run in real Chromium."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CONSISTENCY = [
    (
        2,
        8,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

SCRIPT = """
async ([leaves, roots, inclusion, consistency]) => {
  const M = await import('/console/static/merkle.js');
  const out = {roots: [], inclusion: [], inclusionMutated: [],
               consistency: [], consistencyMutated: []};
  const leafHashes = [];
  for (const l of leaves) leafHashes.push(await M.leafHash(M.unhex(l)));
  // root of the first n leaves, recomputed the RFC way (split at the largest power of two < n)
  async function root(hs) {
    if (hs.length === 1) return hs[0];
    let k = 1; while (k * 2 < hs.length) k *= 2;
    return M.nodeHash(await root(hs.slice(0, k)), await root(hs.slice(k)));
  }
  for (let n = 1; n <= leaves.length; n++) {
    out.roots.push(M.hex(await root(leafHashes.slice(0, n))));
  }
  for (const [i, n, proof] of inclusion) {
    const p = proof.map(M.unhex), r = M.unhex(roots[n - 1]);
    out.inclusion.push(await M.verifyInclusion(i, n, leafHashes[i], p, r));
    const flipped = p.map((x) => x.slice()); flipped[1][0] ^= 1;
    out.inclusionMutated.push(
      await M.verifyInclusion(i, n, leafHashes[i], flipped, r),
      await M.verifyInclusion(i, n, leafHashes[i], p.slice(0, -1), r),
      await M.verifyInclusion(i + 1, n, leafHashes[i], p, r),
      await M.verifyInclusion(i, i + 1, leafHashes[i], p, r));  // a size whose path is shorter
  }
  for (const [m, n, proof] of consistency) {
    const p = proof.map(M.unhex), a = M.unhex(roots[m - 1]), b = M.unhex(roots[n - 1]);
    out.consistency.push(await M.verifyConsistency(m, n, a, b, p));
    out.consistencyMutated.push(
      await M.verifyConsistency(m, n, b, a, p),
      await M.verifyConsistency(m, n, a, b, p.slice(1)),
      await M.verifyConsistency(m - 1, n, a, b, p));
  }
  out.canonical = M.canonicalJSON(
    {b: [1, "é", {z: null, a: true}], a: 1e21, "\\u00e9": 0.5, "a\\u0000": 1});
  return out;
}
"""


async def test_rfc_vectors_in_the_browser(page: Any, base_url: str) -> None:
    await page.goto(base_url + "/console")
    out = await page.evaluate(SCRIPT, [LEAVES, ROOTS, INCLUSION, CONSISTENCY])
    assert out["roots"] == ROOTS
    assert out["inclusion"] == [True, True]
    assert not any(out["inclusionMutated"])
    assert out["consistency"] == [True, True]
    assert not any(out["consistencyMutated"])
    # RFC 8785: keys sorted by UTF-16 code units, ECMAScript number formatting.
    assert out["canonical"] == '{"a":1e+21,"a\\u0000":1,"b":[1,"é",{"a":true,"z":null}],"é":0.5}'


def _signed_checkpoint(size: int, root_hex: str) -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    name = "execflow.test/log"
    key_id = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
    body = f"execflow.test/log\n{size}\n{base64.b64encode(bytes.fromhex(root_hex)).decode()}\n"
    signature = base64.b64encode(key_id + key.sign(body.encode())).decode()
    return body + f"\n\u2014 {name} {signature}\n", base64.b64encode(public).decode()


async def test_checkpoint_signature_and_forgery(page: Any, base_url: str) -> None:
    await page.goto(base_url + "/console")
    note, public = _signed_checkpoint(8, ROOTS[7])
    forged = note.replace("\n8\n", "\n9\n")
    _, other_key = _signed_checkpoint(8, ROOTS[7])
    result = await page.evaluate(
        """async ([note, forged, pub, other]) => {
          const M = await import('/console/static/merkle.js');
          const cp = await M.verifyCheckpoint(note, pub);
          const fails = [];
          for (const [n, k] of [[forged, pub], [note, other]]) {
            try { await M.verifyCheckpoint(n, k); fails.push(false); } catch { fails.push(true); }
          }
          return {size: cp.treeSize, root: M.hex(cp.rootHash), fails};
        }""",
        [note, forged, public, other_key],
    )
    assert result == {"size": 8, "root": ROOTS[7], "fails": [True, True]}
