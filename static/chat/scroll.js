// The message pane's scrolling: it follows the newest text while the user is at the
// bottom, stops following when they scroll up to read, and offers a "jump to the
// bottom" button meanwhile. Following starts again once they are back at the bottom.

const NEAR_BOTTOM_PX = 80;

export class ScrollFollower {
  constructor({ scroller, jumpButton }) {
    this.scroller = scroller;
    this.jumpButton = jumpButton;
    this.stickToBottom = true;
    this.lastScrollTop = 0;
    scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    // The pane gets shorter when the composer grows or the keyboard opens: stay at the bottom.
    if (window.ResizeObserver) new ResizeObserver(() => this.followIfStuck()).observe(scroller);
    jumpButton.addEventListener("click", () => {
      this.scrollToBottom();
      jumpButton.hidden = true;
    });
  }

  isNearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight <= NEAR_BOTTOM_PX;
  }

  /** Following stops only when the user scrolls up, and starts again at the bottom. */
  onScroll() {
    const top = this.scroller.scrollTop;
    if (this.isNearBottom()) this.stickToBottom = true;
    else if (top < this.lastScrollTop - 1) this.stickToBottom = false;
    this.lastScrollTop = top;
    this.jumpButton.hidden = this.stickToBottom || this.isNearBottom();
  }

  scrollToBottom() {
    this.stickToBottom = true;
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.lastScrollTop = this.scroller.scrollTop;
    this.jumpButton.hidden = true;
  }

  /**
   * Remembers where `el` is in the pane; the function returned scrolls so that `next`
   * (the element that replaces it: another version of a message) is at the same place.
   */
  anchor(el) {
    const top = (node) => node.getBoundingClientRect().top - this.scroller.getBoundingClientRect().top;
    const before = top(el);
    return (next) => {
      if (!next || !next.isConnected) return;
      this.scroller.scrollTop += top(next) - before;
      this.lastScrollTop = this.scroller.scrollTop;
      this.stickToBottom = this.isNearBottom();
      this.jumpButton.hidden = this.stickToBottom;
    };
  }

  /** Scrolls `el` to the middle of the pane, and stops following the newest text (the user is reading there). */
  reveal(el) {
    this.stickToBottom = false;
    el.scrollIntoView({ block: "center" });
    this.lastScrollTop = this.scroller.scrollTop;
    this.jumpButton.hidden = this.isNearBottom();
  }

  /** Keeps the newest text in view, unless the user has scrolled up to read. */
  followIfStuck() {
    if (this.stickToBottom) {
      this.scroller.scrollTop = this.scroller.scrollHeight;
      this.lastScrollTop = this.scroller.scrollTop;
    } else {
      this.jumpButton.hidden = this.isNearBottom();
    }
  }
}
