// A small, safe markdown renderer for model output.
//
// renderMarkdown(text) returns a DocumentFragment built only from
// createElement and text nodes: model text never reaches an HTML parser, so
// "<script>" or "<img onerror=…>" in a reply is shown as the characters it is.
// Supported: paragraphs (a single newline is a line break), fenced code blocks
// (an unclosed fence runs to the end, so a block renders while it streams),
// inline code, **bold**/__bold__, *italic*/_italic_, bullet and numbered lists
// (nested by indentation), headings, block quotes and horizontal rules.
// Anything else, links included, stays plain text.
'use strict';

(function () {
  const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/;
  const LIST_ITEM = /^([ \t]*)([-*+]|\d{1,9}[.)])[ \t]+(.*)$/;
  const QUOTE = /^ {0,3}>[ ]?(.*)$/;
  const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const BLANK = /^[ \t]*$/;
  const ESCAPABLE = /[\\`*_{}[\]()#+\-.!~<>|]/;

  function el(tag, className) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    return node;
  }

  function isClosingFence(line, fence) {
    const trimmed = line.trim();
    return trimmed.length >= fence.length && trimmed[0] === fence[0] &&
      /^(`+|~+)$/.test(trimmed);
  }

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || LIST_ITEM.test(line) ||
      QUOTE.test(line) || RULE.test(line);
  }

  function indentWidth(ws) {
    let width = 0;
    for (const ch of ws) width += ch === '\t' ? 4 : 1;
    return width;
  }

  function codeBlock(code, lang) {
    const wrap = el('div', 'code-block');
    const bar = el('div', 'code-bar');
    const label = el('span', 'code-lang');
    const safeLang = (lang || '').replace(/[^A-Za-z0-9_+#.-]/g, '').slice(0, 32);
    label.textContent = safeLang || 'code';
    bar.append(label);
    if (navigator.clipboard && window.isSecureContext) {
      const copy = el('button', 'code-copy');
      copy.type = 'button';
      copy.textContent = 'Copy';
      copy.setAttribute('aria-label', 'Copy code');
      copy.addEventListener('click', () => {
        navigator.clipboard.writeText(code).then(() => {
          copy.textContent = 'Copied';
          setTimeout(() => { copy.textContent = 'Copy'; }, 1500);
        }, () => { copy.textContent = 'Copy failed'; });
      });
      bar.append(copy);
    }
    const pre = el('pre');
    const codeEl = el('code', safeLang ? 'language-' + safeLang : '');
    codeEl.textContent = code;
    pre.append(codeEl);
    wrap.append(bar, pre);
    return wrap;
  }

  // Emphasis markers open when followed by non-space; "_" must also not sit
  // inside a word, so snake_case_names stay as they are.
  function canOpen(text, at, marker) {
    const next = text[at + marker.length];
    if (next === undefined || /\s/.test(next)) return false;
    if (marker[0] === '_' && at > 0 && /[\p{L}\p{N}]/u.test(text[at - 1])) return false;
    return true;
  }

  // findCloser returns where the closing marker starts, or -1. In a run of
  // three markers ("***") a double closer takes the last two and a single the
  // last one, so "**a *b***" and "*a **b***" nest as expected.
  function findCloser(text, from, marker) {
    const ch = marker[0];
    for (let j = from; j < text.length; j++) {
      if (text[j] === '\\') { j++; continue; }
      if (text[j] === '`') {
        // Skip a complete code span: its contents are not markup.
        let n = 1;
        while (text[j + n] === '`') n++;
        const end = findBacktickRun(text, j + n, n);
        j = (end >= 0 ? end + n : j + n) - 1;
        continue;
      }
      if (text[j] !== ch) continue;
      let run = 1;
      while (text[j + run] === ch) run++;
      const at = marker.length === 1 ? j + run - 1 : j + run - 2;
      const fits = marker.length === 1 ? run !== 2 : run >= 2;
      const afterSpace = j > 0 && /\s/.test(text[j - 1]);
      const inWord = ch === '_' && /[\p{L}\p{N}]/u.test(text[j + run] || '');
      if (fits && !afterSpace && !inWord && at >= from) return at;
      j += run - 1;
    }
    return -1;
  }

  function findBacktickRun(text, from, n) {
    let j = text.indexOf('`', from);
    while (j >= 0) {
      let m = 1;
      while (text[j + m] === '`') m++;
      if (m === n) return j;
      j = text.indexOf('`', j + m);
    }
    return -1;
  }

  function appendInline(parent, text) {
    let buf = '';
    const flush = () => {
      if (buf) { parent.append(document.createTextNode(buf)); buf = ''; }
    };
    // Once a marker has no closer after position p it has none after any
    // later position either; remembering that keeps rendering linear.
    const noCloserFrom = {};
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === '\\' && i + 1 < text.length && ESCAPABLE.test(text[i + 1])) {
        buf += text[i + 1];
        i += 2;
        continue;
      }
      if (c === '\n') {
        flush();
        parent.append(el('br'));
        i++;
        continue;
      }
      if (c === '`') {
        let n = 1;
        while (text[i + n] === '`') n++;
        const end = findBacktickRun(text, i + n, n);
        if (end < 0) { buf += text.slice(i, i + n); i += n; continue; }
        let content = text.slice(i + n, end).replace(/\n/g, ' ');
        if (content.length > 2 && content[0] === ' ' && content[content.length - 1] === ' ' && content.trim()) {
          content = content.slice(1, -1);
        }
        flush();
        const code = el('code');
        code.textContent = content;
        parent.append(code);
        i = end + n;
        continue;
      }
      if (c === '*' || c === '_') {
        const marker = text[i + 1] === c ? c + c : c;
        const start = i + marker.length;
        if (canOpen(text, i, marker) && !(noCloserFrom[marker] <= start)) {
          const end = findCloser(text, start, marker);
          if (end > start) {
            flush();
            const node = el(marker.length === 2 ? 'strong' : 'em');
            appendInline(node, text.slice(start, end));
            parent.append(node);
            i = end + marker.length;
            continue;
          }
          if (end < 0) noCloserFrom[marker] = start;
        }
        buf += marker;
        i += marker.length;
        continue;
      }
      buf += c;
      i++;
    }
    flush();
  }

  function renderList(lines, start, parent) {
    // Collect items: a marker line starts one; indented or lazy lines continue it.
    const items = [];
    let i = start;
    while (i < lines.length) {
      const line = lines[i];
      const m = LIST_ITEM.exec(line);
      if (m && !RULE.test(line)) {
        const ordered = /\d/.test(m[2]);
        items.push({
          indent: indentWidth(m[1]),
          ordered,
          number: ordered ? parseInt(m[2], 10) : 0,
          text: [m[3]],
        });
        i++;
        continue;
      }
      if (BLANK.test(line)) {
        // A blank line continues the list only if another item follows.
        let k = i + 1;
        while (k < lines.length && BLANK.test(lines[k])) k++;
        if (k < lines.length && LIST_ITEM.exec(lines[k]) && !RULE.test(lines[k])) { i = k; continue; }
        if (k < lines.length && /^[ \t]{2,}\S/.test(lines[k]) && items.length) {
          items[items.length - 1].text.push('');
          i = k;
          continue;
        }
        break;
      }
      if (items.length && (/^[ \t]{2,}\S/.test(line) || !startsBlock(line))) {
        items[items.length - 1].text.push(line.trim());
        i++;
        continue;
      }
      break;
    }

    const stack = []; // {indent, ordered, list}
    for (const item of items) {
      while (stack.length && stack[stack.length - 1].indent > item.indent) stack.pop();
      let top = stack[stack.length - 1];
      if (top && top.indent === item.indent && top.ordered !== item.ordered) {
        stack.pop();
        top = stack[stack.length - 1];
      }
      if (!top || item.indent > top.indent) {
        const list = el(item.ordered ? 'ol' : 'ul');
        if (item.ordered && item.number !== 1) list.start = item.number;
        const host = top ? top.list.lastElementChild || top.list : parent;
        host.append(list);
        top = { indent: item.indent, ordered: item.ordered, list };
        stack.push(top);
      }
      const li = el('li');
      appendInline(li, item.text.join('\n').replace(/\n{2,}/g, '\n'));
      top.list.append(li);
    }
    return i;
  }

  function renderBlocks(text, parent) {
    const lines = text.replace(/\r\n?/g, '\n').split('\n');
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (BLANK.test(line)) { i++; continue; }

      let m = FENCE.exec(line);
      if (m) {
        const body = [];
        i++;
        while (i < lines.length && !isClosingFence(lines[i], m[1])) body.push(lines[i++]);
        i++; // the closing fence, or past the end while the block streams
        parent.append(codeBlock(body.join('\n'), m[2]));
        continue;
      }
      m = HEADING.exec(line);
      if (m) {
        // Headings inside a chat message are kept small: # is h3.
        const h = el('h' + Math.min(m[1].length + 2, 6));
        appendInline(h, m[2]);
        parent.append(h);
        i++;
        continue;
      }
      if (RULE.test(line)) {
        parent.append(el('hr'));
        i++;
        continue;
      }
      if (LIST_ITEM.test(line)) {
        i = renderList(lines, i, parent);
        continue;
      }
      if (QUOTE.test(line)) {
        const inner = [];
        while (i < lines.length && (m = QUOTE.exec(lines[i]))) { inner.push(m[1]); i++; }
        const quote = el('blockquote');
        renderBlocks(inner.join('\n'), quote);
        parent.append(quote);
        continue;
      }
      const para = [line];
      i++;
      while (i < lines.length && !BLANK.test(lines[i]) && !startsBlock(lines[i])) para.push(lines[i++]);
      const p = el('p');
      appendInline(p, para.join('\n'));
      parent.append(p);
    }
  }

  function renderMarkdown(text) {
    const frag = document.createDocumentFragment();
    renderBlocks(String(text == null ? '' : text), frag);
    return frag;
  }

  window.renderMarkdown = renderMarkdown;
})();
