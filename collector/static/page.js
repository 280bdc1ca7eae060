// The status page refreshes itself without a reload: every few seconds it fetches the page again
// and swaps in the sections marked data-live — except one where someone is typing (a form field
// changed or focused) or has a silence form open, so a half-typed comment is never lost.
// No inline script anywhere (CSP script-src 'self'); the page works without this file too.
(function () {
  "use strict";
  var body = document.body;
  var every = (parseInt(body.getAttribute("data-refresh"), 10) || 10) * 1000;
  var busy = false;

  function editing(section) {
    var active = document.activeElement;
    if (active && active !== body && section.contains(active) && /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(active.tagName)) {
      return true;
    }
    var fields = section.querySelectorAll("input:not([type=hidden]), textarea, select");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.tagName === "SELECT") {
        for (var j = 0; j < f.options.length; j++) {
          if (f.options[j].selected !== f.options[j].defaultSelected) return true;
        }
      } else if (f.value !== f.defaultValue) {
        return true;
      }
    }
    var open = section.querySelectorAll("details[open]");
    return open.length > 0;
  }

  function note(text) {
    var n = document.getElementById("refresh-note");
    if (n) n.textContent = text;
  }

  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    // the header tells the collector this is no user activity: the session still ends when idle
    fetch(window.location.pathname + window.location.search, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Netwatch-Refresh": "1" },
    })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        if (!doc.querySelector("#summary")) {
          // the session ended (idle, logged out elsewhere): show the login form, not stale data
          window.location.reload();
          return;
        }
        var kept = 0;
        var live = document.querySelectorAll("[data-live]");
        for (var i = 0; i < live.length; i++) {
          var old = live[i];
          var fresh = doc.getElementById(old.id);
          if (!fresh) continue;
          if (editing(old)) {
            kept++;
            continue;
          }
          old.replaceWith(document.importNode(fresh, true));
        }
        body.setAttribute("data-refreshed", String(Date.now()));
        if (kept) note(document.documentElement.lang === "en" ? "(alerts kept while you type)" : "（正在输入，告警区暂停刷新）");
      })
      .catch(function () {
        note("⚠");
      })
      .then(function () {
        busy = false;
      });
  }

  window.setInterval(refresh, every);
  // "refresh now", for whoever wants it sooner (the browser test; a future button)
  document.addEventListener("netwatch:refresh", refresh);
})();
