// Plain-words descriptions of the protocol's error codes.
//
// describeError({code, message, retry_after}, limits) -> {code, text, detail, retry_after}
//   text         what happened and what to do, for a person
//   detail       the server's own message when it adds something (shown smaller), or ""
//   retry_after  whole seconds to wait, or null
// Both are plain text: callers insert them with textContent.

function seconds(retryAfter) {
  const n = Math.ceil(Number(retryAfter));
  return Number.isFinite(n) && n > 0 ? n : null;
}

function formatNumber(n) {
  return Number(n).toLocaleString();
}

const TOO_LARGE = {
  "message.send": ["A message", "max_content_chars"],
  "message.edit": ["A message", "max_content_chars"],
  "conversation.rename": ["A title", "max_title_chars"],
  "conversation.configure": ["A system prompt", "max_system_prompt_chars"],
};

/**
 * requestType: the `type` of the request the error answers, when known (it makes
 * too_large precise). fromModel: the error ended a reply (`reply.failed`): a rate limit
 * there is the model provider's, never the user's doing.
 */
export function describeError(error, limits = {}, requestType = null, fromModel = false) {
  const code = (error && error.code) || "error";
  const serverMessage = (error && typeof error.message === "string" ? error.message : "").trim();
  const wait = seconds(error && error.retry_after);
  let text;
  let showServerMessage = false;

  switch (code) {
    case "rate_limited":
      if (fromModel) {
        text = wait
          ? `The model's provider is busy right now — you can retry in ${wait} s.`
          : "The model's provider is busy right now. Retry in a moment.";
        break;
      }
      text = wait
        ? `You're sending messages too fast — try again in ${wait} s.`
        : "You're sending messages too fast — try again in a moment.";
      break;
    case "busy":
      // The conversation's reply slot, or the user's replies queued for the local model: the server says which.
      text = serverMessage || "A reply is still being written in this conversation. Wait for it to finish, or stop it first.";
      break;
    case "model_unavailable":
      text = "This model isn't available right now. Pick another model in the menu at the top and try again.";
      showServerMessage = true;
      break;
    case "storage_unavailable":
      text = "Your conversations can't be saved right now, so nothing was changed. Try again in a moment.";
      break;
    case "quota_exceeded":
      text = wait
        ? `You've used up your message allowance for now — try again in ${wait} s.`
        : "You've used up your message allowance for now. Try again later.";
      showServerMessage = true;
      break;
    case "too_large": {
      const [what, limitName] = TOO_LARGE[requestType] || [null, null];
      if (requestType === "conversation.search") text = "That search is too long: at most 200 characters.";
      else if (what && limits[limitName]) text = `That is too long: ${what.toLowerCase()} can have at most ${formatNumber(limits[limitName])} characters.`;
      else text = "That is too long for the server. Shorten it and try again.";
      break;
    }
    case "not_found":
      text = "That conversation or message no longer exists (it may have been deleted in another tab).";
      break;
    case "model_failed":
      text = "The model stopped with an error before finishing its reply. You can retry.";
      showServerMessage = true;
      break;
    default:
      if (code.startsWith("invalid_")) {
        text = "The server could not understand a request from this page. Reload the page and try again.";
      } else {
        text = serverMessage || "Something went wrong. Try again.";
      }
  }
  const detail = showServerMessage && serverMessage && serverMessage !== text ? serverMessage : "";
  return { code, text, detail, retry_after: wait };
}

/** The words under a reply that failed (`reply.failed`), with the deadline of its live countdown when it has one. */
export function describeReplyFailure(error) {
  if (!error || !(error.code || error.message)) return { text: "This reply failed before it was finished. You can retry.", detail: "" };
  const failure = describeError(error, {}, null, true);
  if (failure.retry_after) failure.until = Date.now() + failure.retry_after * 1000;
  return failure;
}
