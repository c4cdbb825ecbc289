// Client-side verification of audit-log entries, written from RFC 9162 (Certificate
// Transparency 2.0) and the C2SP tlog-checkpoint / signed-note formats, so the operator need not
// trust the server's word: the browser recomputes the leaf hash from the entry, walks the
// inclusion proof to a root, and checks that root against an Ed25519-signed checkpoint.
// Pure functions over Web Crypto; no DOM access here.

const enc = new TextEncoder();

export function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

export function unhex(text) {
  if (!/^([0-9a-f]{2})*$/i.test(text)) throw new Error("not a hex string");
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
  return out;
}

export function unbase64(text) {
  const bin = atob(text);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// RFC 8785 (JCS): object keys sorted by UTF-16 code units (JavaScript's default sort order),
// numbers and strings serialised exactly as ECMAScript's JSON.stringify does.
export function canonicalJSON(value) {
  if (value === null || typeof value !== "object") {
    if (typeof value === "number" && !Number.isFinite(value)) throw new Error("non-finite number");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return "[" + value.map(canonicalJSON).join(",") + "]";
  const keys = Object.keys(value).sort();
  return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonicalJSON(value[k])).join(",") + "}";
}

export async function leafHash(bytes) {
  return sha256(concat(Uint8Array.of(0), bytes));
}

export async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

const odd = (n) => n % 2 === 1;
const half = (n) => Math.floor(n / 2);

// RFC 9162 section 2.1.3.2.
export async function verifyInclusion(leafIndex, treeSize, leaf, proof, root) {
  if (leafIndex >= treeSize || leafIndex < 0) return false;
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      r = await nodeHash(p, r);
      if (!odd(fn)) {
        while (!odd(fn) && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 && equal(r, root);
}

// RFC 9162 section 2.1.4.2.
export async function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
  if (first > second) return false;
  if (first === second) return proof.length === 0 && equal(firstRoot, secondRoot);
  if (first === 0) return proof.length === 0;
  if (proof.length === 0) return false;
  let path = proof;
  if (Number.isInteger(Math.log2(first))) path = [firstRoot, ...proof];
  let fn = first - 1;
  let sn = second - 1;
  while (odd(fn)) {
    fn = half(fn);
    sn = half(sn);
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if (!odd(fn)) {
        while (!odd(fn) && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 && equal(fr, firstRoot) && equal(sr, secondRoot);
}

// C2SP tlog-checkpoint: "<origin>\n<size>\n<base64 root>\n[extensions]\n\n— <name> <base64 sig>\n"
export function parseCheckpoint(note) {
  const split = note.indexOf("\n\n");
  if (split < 0) throw new Error("checkpoint has no signature block");
  const body = note.slice(0, split + 1);
  const lines = body.split("\n");
  const [origin, size, root] = lines;
  if (!/^[0-9]+$/.test(size || "")) throw new Error("checkpoint size is not a number");
  const signatures = note
    .slice(split + 2)
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const m = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!m) throw new Error("malformed signature line");
      return { name: m[1], blob: unbase64(m[2]) };
    });
  return { body, origin, treeSize: Number(size), rootHash: unbase64(root), signatures };
}

// Ed25519 key id per the signed-note spec: SHA-256(name || 0x0A || 0x01 || public key)[:4].
export async function keyId(name, publicKey) {
  const digest = await sha256(concat(enc.encode(name), Uint8Array.of(0x0a, 0x01), publicKey));
  return digest.slice(0, 4);
}

export async function verifyCheckpoint(note, publicKeyB64) {
  const cp = parseCheckpoint(note);
  const publicKey = unbase64(publicKeyB64);
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  for (const sig of cp.signatures) {
    const expectedId = await keyId(sig.name, publicKey);
    if (sig.blob.length !== 68 || !equal(sig.blob.slice(0, 4), expectedId)) continue;
    if (await crypto.subtle.verify("Ed25519", key, sig.blob.slice(4), enc.encode(cp.body))) return cp;
  }
  throw new Error("no valid signature from the published key");
}

// The whole check for one entry, as the audit panel runs it. Returns a list of the steps passed;
// throws with the first step that failed.
export async function verifyEntry(proofResponse, checkpointResponse) {
  const steps = [];
  const leaf = await leafHash(enc.encode(canonicalJSON(proofResponse.entry)));
  if (hex(leaf) !== proofResponse.leaf_hash) throw new Error("leaf hash does not match the entry");
  steps.push("leaf hash recomputed from the entry");
  const root = unhex(proofResponse.root_hash);
  const index = proofResponse.entry.seq;
  const ok = await verifyInclusion(index, proofResponse.tree_size, leaf, proofResponse.inclusion_proof.map(unhex), root);
  if (!ok) throw new Error("inclusion proof does not lead to the root");
  steps.push(`inclusion proof verified against a tree of ${proofResponse.tree_size}`);
  const cp = await verifyCheckpoint(checkpointResponse.checkpoint, checkpointResponse.public_key);
  steps.push(`checkpoint signature verified (${cp.origin}, size ${cp.treeSize})`);
  if (cp.treeSize !== proofResponse.tree_size || !equal(cp.rootHash, root)) {
    throw new Error("the proof's root is not the signed checkpoint's root");
  }
  steps.push("root matches the signed checkpoint");
  return steps;
}
