// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // <select data-autosubmit>: submit its form on change (the fallback button is hidden).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.requestSubmit(); });
  });
  document.documentElement.classList.add("js");

  // <form data-confirm="…">: ask first (delegated: forms swapped in by a refresh ask too).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches && form.matches("form[data-confirm]") && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // <button data-copy="#id">: copy the element's secret, value or text.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.querySelector(button.dataset.copy);
      if (!source) { return; }
      var text = source.dataset.secret || source.value || source.textContent.trim();
      var done = function () {
        var label = button.textContent;
        button.textContent = "Copied ✓";
        button.classList.add("copied");
        setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 1800);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { fallback(source, done); });
      } else {
        fallback(source, done);
      }
    });
  });

  // <div id="…" data-refresh="ms" data-refresh-url="/page">: fetch the page again every few
  // seconds (while the tab is visible) and swap in the element's fresh copy; stops once the
  // element carries data-ended="true", or when the page is gone or needs signing in again.
  document.querySelectorAll("[data-refresh][id]").forEach(function (element) {
    var id = element.id;
    var every = parseInt(element.dataset.refresh, 10) || 2000;
    var url = element.dataset.refreshUrl || window.location.pathname + window.location.search;
    var tick = function () {
      var current = document.getElementById(id);
      if (!current || current.dataset.ended === "true") { return; }
      if (document.hidden) { setTimeout(tick, every); return; }
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.redirected || response.status === 404 || response.status === 401) { return null; }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(id);
          var now = document.getElementById(id);
          if (!fresh || !now) { return; }
          if (fresh.outerHTML !== now.outerHTML) { now.replaceWith(document.importNode(fresh, true)); }
          setTimeout(tick, every);
        })
        .catch(function () { setTimeout(tick, every * 3); });
    };
    setTimeout(tick, every);
  });

  // <pre data-log-url="…" data-live="id">: follow a deployment's output by polling the API,
  // appending what is new; after the live element says data-ended="true", one last fetch.
  document.querySelectorAll("pre[data-log-url]").forEach(function (pre) {
    var shown = "";
    var status = document.getElementById("log-status");
    var say = function (text) { if (status) { status.textContent = text; } };
    var ended = function () {
      var live = document.getElementById(pre.dataset.live);
      return !live || live.dataset.ended === "true";
    };
    var newPart = function (text) {  // what follows what is shown; null: start over
      if (text.lastIndexOf(shown, 0) === 0) { return text.slice(shown.length); }
      var anchor = shown.slice(-1024);
      var at = text.lastIndexOf(anchor);
      return at >= 0 ? text.slice(at + anchor.length) : null;
    };
    var show = function (text) {
      if (!text && shown) { return; }
      var atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
      var added = newPart(text);
      if (added === null || shown.length + added.length > 2097152) {
        shown = text;
        pre.textContent = text;
      } else if (added) {
        shown += added;
        pre.appendChild(document.createTextNode(added));
      }
      if (atBottom) { pre.scrollTop = pre.scrollHeight; }
    };
    var tick = function () {
      var last = ended();
      if (document.hidden && !last) { setTimeout(tick, 1500); return; }
      fetch(pre.dataset.logUrl, { credentials: "same-origin", headers: { Accept: "text/plain" } })
        .then(function (response) {
          if (!response.ok) { throw response.status; }
          return response.text();
        })
        .then(function (text) {
          show(text);
          if (last) {
            pre.classList.add("ended");
            say("The deployment has ended: this is its final output.");
            return;
          }
          say("Live · updated " + new Date().toLocaleTimeString());
          setTimeout(tick, 1500);
        })
        .catch(function (code) {
          if (code === 404 || code === 401) { say("The log is no longer available."); return; }
          say("Could not fetch the log; retrying…");
          setTimeout(tick, 4500);
        });
    };
    tick();
  });

  function fallback(source, done) {
    if (source.select) { source.select(); } else {
      var range = document.createRange();
      range.selectNodeContents(source);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    try { if (document.execCommand("copy")) { done(); } } catch (e) { /* selected: copy by hand */ }
  }
})();
