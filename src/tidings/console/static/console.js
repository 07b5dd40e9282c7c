// Refreshes the overview's figures: every element with data-metric="name" takes the
// value of that name from the JSON endpoint. No framework; textContent only (never HTML).
(function () {
  const section = document.querySelector("[data-refresh]");
  if (!section) return;
  const url = section.getAttribute("data-refresh");
  async function refresh() {
    try {
      const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!answer.ok) return;
      const { numbers } = await answer.json();
      for (const el of document.querySelectorAll("[data-metric]")) {
        const name = el.getAttribute("data-metric");
        if (name in numbers) el.textContent = String(numbers[name]);
      }
      document.body.setAttribute("data-refreshed", String(Date.now()));
    } catch (e) {
      // the console may be restarting: try again at the next tick
    }
  }
  setInterval(refresh, 3000);
})();
