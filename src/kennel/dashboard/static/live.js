// The live view of a running turn: reads the turn's AI SDK UI message stream (server-sent
// events from the task's event log) and shows it as it is written. Model and tool output only
// ever reaches the page as text nodes (textContent), never as HTML; when the turn ends the
// server's own rendering (markdown made safe on the server) replaces this one, through htmx.

const FILE_URL = /\/api\/workers\/([^/]+)\/files\/(.+)$/;
const LINK_REL = "noopener noreferrer nofollow";

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function pretty(value) {
  try {
    return JSON.stringify(value, null, 2) ?? "null";
  } catch {
    return String(value);
  }
}

function webUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

class TurnView {
  constructor(root) {
    this.root = root;
    this.blocks = new Map();
    this.tools = new Map();
    this.sources = null;
    this.files = null;
    this.placeholder = root.querySelector(".typing");
  }

  add(chunk) {
    const kind = chunk.type;
    if (kind === "text-start") this.open(chunk.id, element("div", "live-text"));
    else if (kind === "text-delta") this.append(chunk.id, chunk.delta);
    else if (kind === "reasoning-start") this.open(chunk.id, this.folded("Reasoning"), "pre");
    else if (kind === "reasoning-delta") this.append(chunk.id, chunk.delta);
    else if (kind.startsWith("tool-")) this.tool(kind, chunk);
    else if (kind === "source-url") this.source(chunk);
    else if (kind === "file") this.file(chunk);
    else if (kind === "error") this.notice(chunk.errorText || "The turn failed.", true);
    else if (kind === "abort") this.notice("Cancelled.", false);
  }

  insert(node) {
    this.placeholder?.remove();
    this.placeholder = null;
    this.root.append(node);
    return node;
  }

  folded(label) {
    const details = element("details");
    details.append(element("summary", "", label));
    return details;
  }

  open(id, container, innerTag) {
    this.insert(container);
    const target = innerTag ? container.appendChild(element(innerTag)) : container;
    target.classList.add("typing");
    this.blocks.set(id, target);
  }

  append(id, text) {
    const target = this.blocks.get(id);
    if (target && typeof text === "string") target.append(document.createTextNode(text));
  }

  tool(kind, chunk) {
    let view = this.tools.get(chunk.toolCallId);
    if (!view) {
      if (!chunk.toolName) return;
      const details = this.folded("");
      const summary = details.querySelector("summary");
      summary.append("Tool ", element("code", "", chunk.toolName));
      view = { details, summary, input: element("pre"), output: null };
      details.append(element("h3", "", "Input"), view.input);
      this.tools.set(chunk.toolCallId, view);
      this.insert(details);
    }
    if ("input" in chunk) view.input.textContent = pretty(chunk.input);
    if (kind === "tool-output-available" || "errorText" in chunk) {
      view.output ??= view.details.appendChild(element("pre"));
      view.output.before(element("h3", "", "errorText" in chunk ? "Error" : "Output"));
      view.output.textContent = "errorText" in chunk ? String(chunk.errorText) : pretty(chunk.output);
    }
  }

  source(chunk) {
    const href = webUrl(chunk.url);
    if (!href) return;
    this.sources ??= this.insert(element("ul", "sources"));
    const link = element("a", "", chunk.title || href);
    link.href = href;
    link.rel = LINK_REL;
    link.target = "_blank";
    this.sources.append(element("li")).append(link);
  }

  file(chunk) {
    const found = FILE_URL.exec(String(chunk.url || ""));
    if (!found) return;
    this.files ??= this.insert(element("ul", "files"));
    const name = decodeURIComponent(found[2]).split("/").pop();
    const link = element("a", "", `⬇ ${name}`);
    link.href = `/worker/${found[1]}/files/${found[2]}`;
    link.setAttribute("download", "");
    this.files.append(element("li")).append(link);
  }

  notice(text, failed) {
    this.insert(element("p", failed ? "notice error" : "notice", text));
  }

  finish() {
    for (const target of this.blocks.values()) target.classList.remove("typing");
  }
}

function follow(root) {
  const view = new TurnView(root);
  // EventSource reconnects by itself after a dropped connection and sends Last-Event-ID,
  // so the server resumes right after the last event this page has shown.
  const source = new EventSource(root.dataset.events);
  source.onmessage = (message) => {
    if (!root.isConnected) {
      source.close(); // swapped out by a newer rendering of the page
      return;
    }
    if (message.data === "[DONE]") {
      source.close();
      view.finish();
      root.setAttribute("aria-busy", "false");
      root.dispatchEvent(new CustomEvent("turn-ended"));
      return;
    }
    let chunk;
    try {
      chunk = JSON.parse(message.data);
    } catch {
      return;
    }
    if (chunk && typeof chunk.type === "string") view.add(chunk);
  };
}

export function startLiveTurns(root) {
  const found = [...root.querySelectorAll("[data-events]")];
  if (root.matches?.("[data-events]")) found.push(root);
  for (const node of found) {
    if (!node.dataset.following) {
      node.dataset.following = "yes";
      follow(node);
    }
  }
}
