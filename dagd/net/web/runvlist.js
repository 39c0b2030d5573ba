// Windowing for long lists of fixed-height rows (the Run page's Gantt chart and step table):
// only the rows in view, plus a margin, exist in the DOM, so a 2,000-step run costs what
// about 40 rows cost. A scroll container holds a spacer as tall as every row together; the
// drawn rows sit at their own offset inside it.

/**
 * A scroll container's scroll offset and size, kept from its scroll events and a
 * ResizeObserver, so drawing never reads layout (a read after a DOM change forces the browser
 * to lay the whole page out at once, the costliest part of a redraw on a 2,000-step page).
 */
export class Viewport {
  constructor(scroller, onChange) {
    this.scroller = scroller;
    this.top = 0;
    this.height = 0;
    this.width = 0;
    this.onScroll = () => {
      this.top = scroller.scrollTop;
      onChange();
    };
    scroller.addEventListener("scroll", this.onScroll, { passive: true });
    this.observer = new ResizeObserver((entries) => {
      const box = entries[entries.length - 1].contentRect;
      this.height = box.height;
      this.width = box.width;
      onChange();
    });
    this.observer.observe(scroller);
  }

  /** Scroll to the top (e.g. after the rows changed). */
  toTop() {
    this.scroller.scrollTop = 0;
    this.top = 0;
  }

  /** First and last (exclusive) row index to draw for `count` rows of `rowHeight` px. */
  range(rowHeight, count, overscan = 10) {
    const height = this.height || rowHeight * 20;
    const first = Math.max(0, Math.floor(this.top / rowHeight) - overscan);
    const last = Math.min(count, Math.ceil((this.top + height) / rowHeight) + overscan);
    return [first, Math.max(first, last)];
  }

  destroy() {
    this.scroller.removeEventListener("scroll", this.onScroll);
    this.observer.disconnect();
  }
}

/** Calls `fn` at most once per animation frame however often `schedule()` is called. */
export function frameThrottle(fn) {
  let pending = 0;
  const run = () => {
    pending = 0;
    fn();
  };
  return {
    schedule() {
      if (!pending) pending = requestAnimationFrame(run);
    },
    cancel() {
      if (pending) cancelAnimationFrame(pending);
      pending = 0;
    },
  };
}

/**
 * What the Gantt chart and the step table share: a RunModel's steps drawn as windowed rows,
 * one of them selected, redrawn at most once a frame by the subclass's draw().
 * @param model a RunModel
 * @param options.onSelect(stepId) called when a row is clicked
 * @param options.now () => ms, the clock (tests and benchmarks may pass their own)
 */
export class StepRows {
  constructor(model, { onSelect = () => {}, now = () => Date.now() } = {}) {
    this.model = model;
    this.onSelect = onSelect;
    this.now = now;
    this.selected = null;
    this.frame = frameThrottle(() => this.draw());
  }

  /** Window the rows to what `scroller` (the rows' scroll container) shows. */
  watch(scroller) {
    this.view = new Viewport(scroller, () => this.frame.schedule());
  }

  select(stepId) {
    this.selected = stepId;
    this.frame.schedule();
  }

  destroy() {
    this.frame.cancel();
    this.view?.destroy();
  }
}

/** Calls `fn` in an animation frame at most once every `ms` milliseconds however often
 * `schedule()` is called: a burst of thousands of events costs a few redraws, not one per
 * frame. The first call after a quiet period draws at the next frame. */
export function rateLimit(fn, ms) {
  let last = -Infinity;
  let timer = null;
  const frame = frameThrottle(() => {
    last = performance.now();
    fn();
  });
  return {
    schedule() {
      if (timer !== null) return;
      const wait = last + ms - performance.now();
      if (wait <= 0) {
        frame.schedule();
      } else {
        timer = setTimeout(() => {
          timer = null;
          frame.schedule();
        }, wait);
      }
    },
    cancel() {
      clearTimeout(timer);
      timer = null;
      frame.cancel();
    },
  };
}
