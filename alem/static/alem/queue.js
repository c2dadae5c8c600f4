// My queue: every data-poll-seconds (ALEM_QUEUE_POLL_SECONDS) fetch what waits for the user (the same pages of each list) and
// swap it in, announcing in the page's live region what came in since the shown part was rendered. The page works without it
// (a reload shows the same).
(() => {
  "use strict";

  function renderedAt(root) {
    const list = root.querySelector("[data-rendered-at]");
    return list ? list.getAttribute("data-rendered-at") : "";
  }

  function start() {
    const container = document.getElementById("queue-waiting");
    const announce = document.getElementById("queue-announce");
    if (!container || !announce || !window.fetch) return;
    const url = container.getAttribute("data-poll-url");
    const seconds = Number(container.getAttribute("data-poll-seconds")) || 30;
    let since = renderedAt(container);
    let busy = false;

    async function poll() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        // The pages shown (page, fills_page) stay as the address bar has them.
        const query = new URLSearchParams(window.location.search);
        query.set("since", since);
        const response = await fetch(`${url}?${query}`, {
          credentials: "same-origin",
          headers: { Accept: "text/html", "X-Requested-With": "fetch" },
          cache: "no-store",
          redirect: "error",
        });
        if (!response.ok) return;
        const html = await response.text();
        const fresh = document.createElement("div");
        fresh.innerHTML = html;
        const list = fresh.querySelector("[data-rendered-at]");
        if (!list) return;
        // Do not pull the list from under the keyboard: wait until focus leaves it.
        if (container.contains(document.activeElement) && document.activeElement !== document.body) {
          return;
        }
        container.replaceChildren(...fresh.childNodes);
        document.dispatchEvent(new Event("alem:content-replaced"));
        since = renderedAt(container);
        const message = list.getAttribute("data-new-message");
        if (message) {
          announce.textContent = message;
          announce.hidden = false;
        }
      } catch (error) {
        // Offline or signed out: try again at the next tick.
      } finally {
        busy = false;
      }
    }

    window.setInterval(poll, seconds * 1000);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) poll();
    });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
