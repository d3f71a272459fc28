// What the server rendered into the chat page for its scripts (the "chat-boot" JSON
// block of templates/chat/chat.html), and the page URLs built from it. The server
// chooses the URLs; the page never hard-codes them beyond these fallbacks.

function readBoot() {
  const node = document.getElementById("chat-boot");
  try {
    return (node && JSON.parse(node.textContent)) || {};
  } catch {
    return {};
  }
}

export const boot = readBoot();
export const NEW_CHAT_URL = boot.newChatUrl || "/new/";
export const APP_NAME = document.body.dataset.appName || "Chat";
const URL_TEMPLATE = boot.conversationUrlTemplate || "/c/__id__/";

export function conversationUrl(id) {
  return URL_TEMPLATE.replace("__id__", encodeURIComponent(id));
}

/** The conversation id in a page path, or null when the path is not a conversation's. */
export function conversationIdFromPath(pathname) {
  const [before, after] = URL_TEMPLATE.split("__id__");
  if (after === undefined || !pathname.startsWith(before) || !pathname.endsWith(after)) return null;
  const middle = pathname.slice(before.length, pathname.length - after.length);
  if (!middle || middle.includes("/")) return null;
  try {
    return decodeURIComponent(middle);
  } catch {
    return null;
  }
}

export function socketUrl() {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${window.location.host}${boot.wsPath || "/ws/chat/"}`;
}
