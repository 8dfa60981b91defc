// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // <select data-autosubmit>: submit its form on change (the fallback button is hidden).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.requestSubmit(); });
  });
  document.documentElement.classList.add("js");

  // <form data-confirm="…">: ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
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
