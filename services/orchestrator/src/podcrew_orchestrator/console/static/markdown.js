// The report's markdown, as DOM nodes built from text: nothing a report says is ever parsed
// as HTML, so a report cannot inject markup or script into the page that holds the key.
// A small subset: headings, paragraphs, bullet and numbered lists, code blocks, `code`,
// **bold**, *emphasis*, [n] citations and [text](http(s) links).

const INLINE = /`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|\[(\d+)\](?!\()|\[([^\]]+)\]\(([^)\s]+)\)/g;

/** `url` when it is an http(s) address, else null (no javascript:, data: …). */
export function safeUrl(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** An <a> that opens `url` in a new tab, telling it nothing about this page. */
export function externalLink(url, text) {
  const a = document.createElement("a");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.textContent = text;
  return a;
}

function el(tag, ...children) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

/** The inline content of one line: text nodes and the few elements the subset allows. */
export function inline(text) {
  const out = [];
  let at = 0;
  for (const m of text.matchAll(INLINE)) {
    out.push(text.slice(at, m.index));
    at = m.index + m[0].length;
    const [, code, strong, em, cite, label, href] = m;
    if (code !== undefined) out.push(el("code", code));
    else if (strong !== undefined) out.push(el("strong", ...inline(strong)));
    else if (em !== undefined) out.push(el("em", ...inline(em)));
    else if (cite !== undefined) {
      const a = el("a", `[${cite}]`);
      a.href = `#source-${cite}`;
      a.className = "cite";
      out.push(a);
    } else {
      const url = safeUrl(href);
      out.push(url ? externalLink(url, label) : m[0]);
    }
  }
  out.push(text.slice(at));
  return out.filter((part) => part !== "");
}

/** A DocumentFragment of the markdown `text`. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  let list = null;
  let paragraph = null;
  let code = null;
  const close = () => { list = null; paragraph = null; };
  for (const line of text.split("\n")) {
    if (code !== null) {
      if (line.startsWith("```")) code = null;
      else code.textContent += `${line}\n`;
      continue;
    }
    let m;
    if (line.startsWith("```")) {
      close();
      code = el("code");
      fragment.append(el("pre", code));
    } else if ((m = /^(#{1,6})\s+(.*)$/.exec(line))) {
      close();
      // The page's own headings take h1 and h2: a report's levels start below them.
      fragment.append(el(`h${Math.min(m[1].length + 1, 6)}`, ...inline(m[2])));
    } else if ((m = /^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/.exec(line))) {
      paragraph = null;
      const tag = m[1] ? "ul" : "ol";
      if (list === null || list.tagName.toLowerCase() !== tag) {
        list = el(tag);
        fragment.append(list);
      }
      list.append(el("li", ...inline(m[3])));
    } else if (line.trim() === "") {
      close();
    } else if (paragraph !== null) {
      paragraph.append(" ", ...inline(line));
    } else {
      list = null;
      paragraph = el("p", ...inline(line));
      fragment.append(paragraph);
    }
  }
  return fragment;
}
