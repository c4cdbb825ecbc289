// The console's only way to the server: the public API, with the key from session storage.

const STORAGE_KEY = "execflow.apiKey";

export class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export const session = {
  get key() {
    return sessionStorage.getItem(STORAGE_KEY);
  },
  set key(value) {
    if (value) sessionStorage.setItem(STORAGE_KEY, value);
    else sessionStorage.removeItem(STORAGE_KEY);
  },
};

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.key}`, Accept: "application/json", ...extra };
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: fall through to the status text */
  }
  const message = (body && body.message) || `${response.status} ${response.statusText}`;
  return new ApiError(message, body && body.code, response.status);
}

export async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(`The API could not be reached: ${err.message}`, "NETWORK", 0);
  }
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

// Server-Sent Events over fetch (EventSource cannot send an Authorization header).
// Calls onEvent({event, data}) for each event until the stream ends or `signal` aborts.
export async function stream(path, onEvent, signal) {
  const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      const message = { event: "message", data: "" };
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const [field, ...rest] = line.split(":");
        const text = rest.join(":").replace(/^ /, "");
        if (field === "event") message.event = text;
        else if (field === "data") message.data += (message.data ? "\n" : "") + text;
      }
      if (!message.data) continue;
      try {
        message.data = JSON.parse(message.data);
      } catch {
        /* plain-text data stays a string */
      }
      onEvent(message);
    }
  }
}

// The first array in a response body: lists come as {"success": true, "<things>": [...]}.
export function listOf(body) {
  if (Array.isArray(body)) return body;
  for (const value of Object.values(body || {})) if (Array.isArray(value)) return value;
  return [];
}
