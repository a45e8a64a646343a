// Komora ops console: progressive enhancement only; every page works without this file.
// - [data-live]: re-fetch the page every 2 s and swap the element with the same id,
//   unless the user is typing in it or the tab is hidden.
// - [data-select-all]: a checkbox that ticks every box named by its value.
// - "/" focuses the first search field.
(function () {
  "use strict";
  function live(el) {
    var status = document.querySelector("[data-live-status]");
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      var a = document.activeElement;
      if (a && el.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName)) return;
      busy = true;
      fetch(location.href, { credentials: "same-origin", headers: { "X-Console-Live": "1" } })
        .then(function (r) {
          if (r.redirected || !r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (text) {
          var doc = new DOMParser().parseFromString(text, "text/html");
          var fresh = doc.getElementById(el.id);
          if (fresh) {
            el.innerHTML = fresh.innerHTML;
            if (status) status.textContent = "live: updated " + new Date().toLocaleTimeString();
          }
        })
        .catch(function (e) {
          if (status) status.textContent = "live refresh paused (" + e.message + ")";
        })
        .finally(function () { busy = false; });
    }, 2000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(live);
    document.querySelectorAll("[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        document.querySelectorAll('input[type=checkbox][name="' + box.value + '"]')
          .forEach(function (b) { b.checked = box.checked; });
      });
    });
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      if (e.key !== "/" || /^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName)) return;
      var s = document.querySelector("input[type=search]");
      if (s) { e.preventDefault(); s.focus(); }
    });
  });
})();
