// Live figures: an enhancement only. Without JavaScript the page shows the figures of when it
// was loaded, and a reload shows newer ones. With it, elements carrying data-live="<path in
// /api/v1/national>" are refreshed every few seconds, and the reader can pause the updates
// (WCAG 2.2.2). Never reloads the page (no meta refresh).
(function () {
  "use strict";
  var box = document.querySelector("[data-live-control]");
  if (!box || !window.fetch) { return; }
  var lang = document.documentElement.lang === "en" ? "en-GB" : "vi-VN";
  var number = new Intl.NumberFormat(lang);
  var tonnes = new Intl.NumberFormat(lang, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  var button = box.querySelector("button");
  var status = box.querySelector("[data-live-status]");
  var every = 5000;
  var timer = null;
  function pick(data, path) {
    return path.split(".").reduce(function (v, k) { return v == null ? v : v[k]; }, data);
  }
  function show(data) {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var kind = el.getAttribute("data-live-format");
      var v = pick(data, el.getAttribute("data-live"));
      if (typeof v !== "number") { return; }
      if (kind === "tonnes") { el.textContent = tonnes.format(v / 1e6); }
      else if (kind === "money") { el.textContent = number.format(v) + (lang === "vi-VN" ? "\u00a0đ" : "\u00a0₫"); }
      else { el.textContent = number.format(v); }
    });
    var bar = document.querySelector("progress[data-live-progress]");
    var v = pick(data, "households.onboarded");
    if (bar && typeof v === "number") { bar.value = v; }
    var sentence = document.querySelector("[data-live-text]");
    var target = pick(data, "households.target") || (bar && bar.max);
    if (sentence && typeof v === "number" && target) {
      // Hundredths of a percent, truncated, as the server writes it.
      var pct = new Intl.NumberFormat(lang, { minimumFractionDigits: 2, maximumFractionDigits: 2 })
        .format(Math.floor(v * 10000 / target) / 100) + (lang === "vi-VN" ? "\u00a0%" : "%");
      sentence.textContent = sentence.getAttribute("data-live-text").replace("{n}", number.format(v)).replace("{p}", pct);
    }
    var updated = document.querySelector("[data-live-updated]");
    if (updated && data.as_of) {
      updated.textContent = updated.getAttribute("data-live-updated").replace("{t}", when(data.as_of));
    }
  }
  // A time as the server writes it, in Vietnam's time zone: "14:05 01/12/2026" or "14:05, 1 Dec 2026".
  function when(iso) {
    var opts = lang === "vi-VN"
      ? { day: "2-digit", month: "2-digit", year: "numeric" }
      : { day: "numeric", month: "short", year: "numeric" };
    opts.timeZone = "Asia/Ho_Chi_Minh"; opts.hour = "2-digit"; opts.minute = "2-digit"; opts.hourCycle = "h23";
    var p = {};
    // en-GB for the parts in both languages: day, month and year come as the server writes them.
    new Intl.DateTimeFormat("en-GB", opts).formatToParts(new Date(iso))
      .forEach(function (x) { p[x.type] = x.value; });
    return lang === "vi-VN"
      ? p.hour + ":" + p.minute + " " + p.day + "/" + p.month + "/" + p.year
      : p.hour + ":" + p.minute + ", " + p.day + " " + p.month + " " + p.year;
  }
  function tick() {
    fetch("/api/v1/national", { headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { show(data); } })
      .catch(function () { /* the figures on the page stay as they are */ });
  }
  function start() { timer = window.setInterval(tick, every); button.textContent = button.getAttribute("data-pause"); button.setAttribute("aria-pressed", "false"); status.textContent = ""; }
  function stop() { window.clearInterval(timer); timer = null; button.textContent = button.getAttribute("data-resume"); button.setAttribute("aria-pressed", "true"); }
  button.addEventListener("click", function () { if (timer) { stop(); } else { tick(); start(); } });
  box.hidden = false;
  start();
})();
