// The public run API, as the console calls it: the key in a header, problems as errors.
import { readEvents } from "./sse.js";

const KEY = "podcrew.console.key";
const RECONNECT_MS = 500;
const TERMINAL = new Set(["run.succeeded", "run.failed", "run.cancelled"]);

/** An answer of the API that is not a success: its problem+json title, detail and status. */
export class ApiProblem extends Error {
  constructor(status, title, detail) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
  }
}

// sessionStorage: the key lives as long as the tab, and never leaves this browser
// except in the Authorization header of the console's own calls.
export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

function headers(extra = {}) {
  const key = apiKey.get();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function problem(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: the status line says enough
  }
  return new ApiProblem(response.status, body.title || response.statusText || "Error", body.detail);
}

/** Calls `method path` with an optional JSON body; resolves to {status, body}. */
export async function call(method, path, json) {
  const init = { method, headers: headers({ Accept: "application/json" }), cache: "no-store" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await problem(response);
  return { status: response.status, body: await response.json() };
}

/**
 * Follows a run's events to its final one, calling onEvent(type, data, id) for each.
 * A dropped connection or a `stream.closing` event reconnects with Last-Event-ID, so the
 * view resumes without a gap or a repeat; `signal` stops following.
 */
export async function follow(runId, onEvent, signal) {
  let lastId = null;
  for (;;) {
    const extra = { Accept: "text/event-stream" };
    if (lastId) extra["Last-Event-ID"] = lastId;
    let response;
    try {
      response = await fetch(`/v1/runs/${encodeURIComponent(runId)}/events`,
        { headers: headers(extra), signal, cache: "no-store" });
    } catch {
      if (signal.aborted) return;
      await pause(RECONNECT_MS);
      continue;
    }
    if (!response.ok) throw await problem(response);
    // A stream that ends without a `stream.closing` event and without a cut has nothing
    // more to send (the run is final, its events may have expired).
    let closing = null;
    try {
      for await (const event of readEvents(response.body)) {
        if (event.event === "stream.closing") {
          closing = JSON.parse(event.data);
          continue;
        }
        if (event.id) lastId = event.id;
        onEvent(event.event, JSON.parse(event.data), event.id);
        if (TERMINAL.has(event.event)) return;
      }
      if (closing === null) return;
    } catch {
      if (signal.aborted) return;
    }
    if (closing && closing.resume === false) {
      throw new ApiProblem(503, "The event stream closed", closing.reason);
    }
    await pause(RECONNECT_MS);
  }
}

function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
