#!/usr/bin/env node
/**
 * Checks a Kennel SSE response body with the Vercel AI SDK's own code, so a
 * passing test means a real `useChat` / `DefaultChatTransport` client accepts
 * the stream, not that it matches our reading of the protocol.
 *
 * Stream mode (default): stdin is a whole SSE response body (UTF-8).
 *   1. `parseJsonEventStream({ stream, schema: uiMessageChunkSchema })` is the
 *      exact pipeline of `DefaultChatTransport.processResponseStream` in ai@7:
 *      eventsource-parser framing, `[DONE]` skipped, JSON parse, zod schema.
 *      Like the transport, the first event that fails stops the stream.
 *   2. The validated chunks go through `readUIMessageStream`, which drives
 *      `processUIMessageStream`, the state machine `useChat` (AbstractChat)
 *      uses; it enforces ordering (e.g. `text-delta` needs a `text-start`,
 *      `tool-output-available` needs an earlier tool input chunk).
 *   Prints {"ok": true, "chunks": [...], "messages": [...]} or
 *   {"ok": false, "error": "...", "chunks": [...]}.
 *
 * Messages mode (`--messages`): stdin is a JSON array of UIMessages, checked
 * with `validateUIMessages` (what a server runs on messages a client sends,
 * and what persisted messages must pass to be loaded back into `useChat`).
 *   Prints {"ok": true} or {"ok": false, "error": "..."}.
 *
 * Always exits 0 after printing the verdict; a non-zero exit (uncaught
 * exception) means the harness itself is broken.
 *
 * Every import below is a public export of the `ai` package root; nothing is
 * imported from dist files or from transitive dependencies.
 */
import {
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
  validateUIMessages,
} from 'ai';

// The SDK may log warnings; stdout is reserved for the single JSON verdict.
for (const level of ['log', 'info', 'warn', 'debug']) {
  console[level] = (...args) => console.error(...args);
}

async function readStdin() {
  const parts = [];
  for await (const part of process.stdin) {
    parts.push(part);
  }
  return new Uint8Array(Buffer.concat(parts));
}

function bytesToStream(bytes) {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(bytes);
      controller.close();
    },
  });
}

function describe(error) {
  if (error instanceof Error) {
    return `${error.name}: ${error.message}`;
  }
  return String(error);
}

function emit(verdict) {
  process.stdout.write(`${JSON.stringify(verdict)}\n`);
}

/** Step 1: SSE framing + JSON + `uiMessageChunkSchema`, as the transport does. */
async function parseChunks(body) {
  const chunks = [];
  const reader = parseJsonEventStream({
    stream: bytesToStream(body),
    schema: uiMessageChunkSchema,
  }).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      return { chunks, error: undefined };
    }
    if (!value.success) {
      // DefaultChatTransport throws `chunk.error` here, failing the request.
      await reader.cancel();
      return {
        chunks,
        error: `event #${chunks.length + 1} rejected: ${describe(value.error)}`,
      };
    }
    chunks.push(value.value);
  }
}

/** Step 2: the `useChat` state machine, via `readUIMessageStream`. */
async function buildMessages(chunks) {
  // An in-band `{"type":"error"}` chunk is valid protocol: the state machine
  // reports it by calling onError with `new Error(errorText)` and carries on.
  // Anything else reaching onError is the state machine rejecting the stream.
  const reportedErrorTexts = new Set(
    chunks.filter(chunk => chunk.type === 'error').map(chunk => chunk.errorText),
  );
  const failures = [];
  const onError = error => {
    const isReportedError =
      error instanceof Error &&
      error.constructor === Error &&
      reportedErrorTexts.has(error.message);
    if (!isReportedError) {
      failures.push(error);
    }
  };

  const messages = [];
  const stream = new ReadableStream({
    start(controller) {
      for (const chunk of chunks) {
        controller.enqueue(chunk);
      }
      controller.close();
    },
  });
  // Each yielded value is a snapshot of the message being built; a `start`
  // with a new messageId begins a new message (resetStateOnMessageIdChange).
  for await (const snapshot of readUIMessageStream({ stream, onError })) {
    const last = messages.at(-1);
    if (last !== undefined && last.id === snapshot.id) {
      messages[messages.length - 1] = snapshot;
    } else {
      messages.push(snapshot);
    }
  }
  return { messages, error: failures.length > 0 ? describe(failures[0]) : undefined };
}

async function checkStream(body) {
  const parsed = await parseChunks(body);
  if (parsed.error !== undefined) {
    return { ok: false, error: parsed.error, chunks: parsed.chunks };
  }
  const built = await buildMessages(parsed.chunks);
  if (built.error !== undefined) {
    return { ok: false, error: built.error, chunks: parsed.chunks };
  }
  return { ok: true, chunks: parsed.chunks, messages: built.messages };
}

async function checkMessages(body) {
  let messages;
  try {
    messages = JSON.parse(new TextDecoder().decode(body));
  } catch (error) {
    return { ok: false, error: `stdin is not JSON: ${describe(error)}` };
  }
  try {
    await validateUIMessages({ messages });
  } catch (error) {
    return { ok: false, error: describe(error) };
  }
  return { ok: true };
}

const mode = process.argv[2];
if (mode !== undefined && mode !== '--messages') {
  throw new Error(`unknown argument ${JSON.stringify(mode)}; expected --messages or nothing`);
}
const body = await readStdin();
emit(mode === '--messages' ? await checkMessages(body) : await checkStream(body));
