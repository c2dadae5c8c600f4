// Progressive enhancement shared by every page; the pages work without it.
// Loaded as a file (the Content-Security-Policy forbids inline scripts).
(() => {
  "use strict";

  // A table wider than its box scrolls sideways; keyboard users scroll it once it can take the
  // focus, and screen readers announce it by its table's caption. Only while it does scroll, so
  // tables that fit add no stop to the Tab order.
  function markScrollableTables() {
    for (const wrap of document.querySelectorAll(".table-wrap")) {
      const caption = wrap.querySelector("caption");
      if (wrap.scrollWidth > wrap.clientWidth) {
        wrap.setAttribute("tabindex", "0");
        wrap.setAttribute("role", "region");
        if (caption) wrap.setAttribute("aria-label", caption.textContent.trim());
      } else if (wrap.getAttribute("role") === "region") {
        wrap.removeAttribute("tabindex");
        wrap.removeAttribute("role");
        wrap.removeAttribute("aria-label");
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    // Put the keyboard on the first field a form refused, so the message beside it is read out.
    const invalid = document.querySelector(
      ".field--error input, .field--error select, .field--error textarea"
    );
    if (invalid) invalid.focus();

    markScrollableTables();
    let pending = 0;
    const remark = () => {
      window.cancelAnimationFrame(pending);
      pending = window.requestAnimationFrame(markScrollableTables);
    };
    window.addEventListener("resize", remark);
    // queue.js swaps in new tables without a page load.
    document.addEventListener("alem:content-replaced", remark);
  });
})();
