// A Server-Sent Events reader over fetch(): EventSource cannot send the Authorization
// header, and an API key must not ride in a URL (logs, history, Referer keep URLs).

const FIELD = /^([^:]*)(?::\s?(.*))?$/;

/** Yields each event of a text/event-stream body as {id, event, data, retry}. */
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = blank();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop(); // an incomplete line waits for the next chunk
      for (const line of lines) {
        if (line === "") {
          if (event.data !== null) yield { ...event, data: event.data };
          event = blank();
        } else if (!line.startsWith(":")) {  // a comment line is a keep-alive ping
          field(event, line);
        }
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function blank() {
  return { id: null, event: "message", data: null, retry: null };
}

function field(event, line) {
  const [, name, value = ""] = FIELD.exec(line);
  if (name === "data") event.data = event.data === null ? value : `${event.data}\n${value}`;
  else if (name === "event") event.event = value;
  else if (name === "id") event.id = value;
  else if (name === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
}
