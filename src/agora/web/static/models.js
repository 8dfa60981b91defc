// A model's usage charts: requests and tokens per project over time, from /api/v1/usage,
// drawn with uPlot. The totals table below them is the text version (and what remains when
// uPlot's files are missing).
(function () {
  "use strict";

  var card = document.getElementById("usage");
  if (!card) { return; }
  var hoursSelect = document.getElementById("usage-hours");
  var status = document.getElementById("usage-status");
  var totalsBody = document.querySelector("#usage-totals tbody");
  var charts = { requests: document.getElementById("chart-requests"), tokens: document.getElementById("chart-tokens") };
  var plots = {};
  // Bucket sizes that keep each chart at 24 to 48 points.
  var BUCKET_MINUTES = { 24: 60, 168: 360, 720: 1440 };
  var COLOURS = ["#4f46e5", "#0891b2", "#16a34a", "#d97706", "#dc2626", "#9333ea", "#0f766e", "#be185d"];
  var HEIGHT = 220;

  function say(text) { status.textContent = text; }

  function load() {
    var hours = parseInt(hoursSelect.value, 10) || 24;
    var bucket = BUCKET_MINUTES[hours] || 60;
    var url = card.dataset.usageUrl + "?model=" + encodeURIComponent(card.dataset.model) +
      "&hours=" + hours + "&bucket_minutes=" + bucket;
    say("Loading usage…");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (rows) {
        var series = build(rows, hours, bucket);
        showTotals(series);
        draw("requests", series, "requests");
        draw("tokens", series, "tokens");
        say(rows.length ? "Updated " + new Date().toLocaleTimeString() + "." : "No requests in this period.");
      })
      .catch(function (error) { say("Could not load the usage: " + error.message); });
  }

  // Rows (one per bucket, project and model) into aligned columns, zeros where nothing ran.
  function build(rows, hours, bucketMinutes) {
    var step = bucketMinutes * 60;
    var now = Math.floor(Date.now() / 1000);
    var first = Math.floor((now - hours * 3600) / step) * step;
    var times = [];
    for (var t = first; t <= now; t += step) { times.push(t); }
    var projects = {};
    rows.forEach(function (row) {
      var p = projects[row.project];
      if (!p) {
        p = projects[row.project] = {
          name: row.project, requests: times.map(zero), tokens: times.map(zero),
          total: { requests: 0, errors: 0, tokens_in: 0, tokens_out: 0 }
        };
      }
      var at = Math.round((Date.parse(row.start) / 1000 - first) / step);
      if (at >= 0 && at < times.length) {
        p.requests[at] += row.requests;
        p.tokens[at] += row.tokens_in + row.tokens_out;
      }
      p.total.requests += row.requests;
      p.total.errors += row.errors;
      p.total.tokens_in += row.tokens_in;
      p.total.tokens_out += row.tokens_out;
    });
    var names = Object.keys(projects).sort();
    return { times: times, projects: names.map(function (n) { return projects[n]; }) };
  }

  function zero() { return 0; }

  function showTotals(series) {
    totalsBody.textContent = "";
    if (!series.projects.length) {
      var row = totalsBody.insertRow();
      var cell = row.insertCell();
      cell.colSpan = 5;
      cell.className = "empty-row muted";
      cell.textContent = "No requests in this period.";
      return;
    }
    series.projects.forEach(function (p) {
      var row = totalsBody.insertRow();
      [p.name, p.total.requests, p.total.errors, p.total.tokens_in, p.total.tokens_out].forEach(function (value, i) {
        var cell = row.insertCell();
        cell.textContent = typeof value === "number" ? value.toLocaleString() : value;
        if (i > 0) { cell.className = "right"; }
      });
    });
  }

  function draw(key, series, field) {
    var target = charts[key];
    if (!window.uPlot) {
      target.classList.add("chart-missing");
      target.textContent = "Charts are unavailable (uPlot's files are missing); the totals are below.";
      return;
    }
    var data = [series.times].concat(series.projects.map(function (p) { return p[field]; }));
    var lines = [{}].concat(series.projects.map(function (p, i) {
      var colour = COLOURS[i % COLOURS.length];
      return { label: p.name, stroke: colour, fill: colour + "1a", width: 2, points: { show: false } };
    }));
    if (plots[key]) { plots[key].destroy(); }
    target.textContent = "";
    plots[key] = new window.uPlot({
      width: Math.max(240, target.clientWidth),
      height: HEIGHT,
      series: lines,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
      axes: [{}, { size: 60 }],
      legend: { show: series.projects.length > 0 }
    }, data, target);
  }

  var resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () {
      Object.keys(plots).forEach(function (key) {
        plots[key].setSize({ width: Math.max(240, charts[key].clientWidth), height: HEIGHT });
      });
    }, 150);
  });
  hoursSelect.addEventListener("change", load);
  load();
  setInterval(function () { if (!document.hidden) { load(); } }, 60000);
})();
