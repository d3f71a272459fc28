// Search highlights: the words of a query marked in plain text (a title, a snippet), as
// the server matches them: whole words of letters and digits, case and accents ignored.
// Built from text nodes and <mark> elements only: the text is never parsed as HTML.

const WORD = /[\p{L}\p{N}]+/gu;

function fold(word) {
  return word.normalize("NFD").replace(/\p{M}/gu, "").toLocaleLowerCase();
}

/** The words of a query, folded, as a set. */
export function queryWords(query) {
  return new Set((String(query || "").match(WORD) || []).map(fold));
}

/** A fragment of `text` with each word of `words` (queryWords) in a <mark>. */
export function highlighted(text, words) {
  const fragment = document.createDocumentFragment();
  const source = String(text || "");
  let last = 0;
  for (const match of source.matchAll(WORD)) {
    if (!words.has(fold(match[0]))) continue;
    if (match.index > last) fragment.append(document.createTextNode(source.slice(last, match.index)));
    const mark = document.createElement("mark");
    mark.textContent = match[0];
    fragment.append(mark);
    last = match.index + match[0].length;
  }
  if (last < source.length) fragment.append(document.createTextNode(source.slice(last)));
  return fragment;
}
