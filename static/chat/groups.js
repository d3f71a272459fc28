// The sidebar's groups: Pinned on top, then the date groups Today, Yesterday, Previous 7
// days, Older (by the local calendar day of each conversation's last message). The label
// is a heading inside the
// first shown item of its group, so the list stays one flat list of conversations
// (sidebar.js moves items around by time; the filter hides some).

const DAY_MS = 24 * 60 * 60 * 1000;

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

/** The group of a conversation last updated at `time` (ms; Infinity when unknown, shown as Today). */
export function dateGroup(time, now = new Date()) {
  const today = startOfDay(now);
  if (!Number.isFinite(time) || time >= today) return "Today";
  if (time >= today - DAY_MS) return "Yesterday";
  if (time >= today - 7 * DAY_MS) return "Previous 7 days";
  return "Older";
}

/** Puts the group headings on the first shown item of each group; groupOf(item) is its
 * label (items of a group must be next to each other). */
export function labelGroups(items, groupOf) {
  let previous = null;
  for (const item of items) {
    const old = item.querySelector(":scope > .conversation-group");
    const group = item.hidden ? null : groupOf(item);
    const label = group && group !== previous ? group : null;
    if (group) previous = group;
    if (!label) {
      if (old) old.remove();
    } else if (!old) {
      const heading = document.createElement("h3");
      heading.className = "conversation-group";
      heading.textContent = label;
      item.prepend(heading);
    } else if (old.textContent !== label) {
      old.textContent = label;
    }
  }
}
