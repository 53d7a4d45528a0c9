// jetmart live dashboard: renders /api/dashboard's JSON (embedded at load, then pushed by the
// server over /events) into the page. Charts are inline SVG drawn here; every chart has a table
// beside it. Text goes in with textContent only (never innerHTML), so data cannot inject markup.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const byTest = (name) => document.querySelector('[data-test="' + name + '"]');

  const FUNNEL_STEPS = [
    ["placed", "Placed"],
    ["stock_reserved", "Stock reserved"],
    ["stock_rejected", "Stock rejected"],
    ["payment_authorized", "Payment authorized"],
    ["payment_declined", "Payment declined"],
    ["confirmed", "Confirmed"],
    ["payment_captured", "Payment captured"],
    ["survey_requested", "Survey requested"],
    ["survey_completed", "Survey answered"],
  ];

  const intFormat = new Intl.NumberFormat("en");

  function moneyFormat(currency, minor) {
    try {
      const f = new Intl.NumberFormat("en", { style: "currency", currency: currency });
      const digits = f.resolvedOptions().maximumFractionDigits;
      return f.format(minor / Math.pow(10, digits));
    } catch (e) {
      return intFormat.format(minor) + " " + currency + " (minor units)";
    }
  }

  function reasonLabel(name) {
    return String(name).replace(/^CANCEL_REASON_/, "").replace(/_/g, " ").toLowerCase();
  }

  function minuteLabel(secs) {
    return new Date(secs * 1000).toISOString().slice(11, 16);
  }

  // Sets a figure's text and its raw value (data-value), only when it changed, so aria-live
  // regions announce real changes only.
  function setValue(el, value, text) {
    if (!el) return;
    const raw = String(value);
    const shown = text === undefined ? (typeof value === "number" ? intFormat.format(value) : raw) : text;
    if (el.getAttribute("data-value") !== raw) el.setAttribute("data-value", raw);
    if (el.textContent !== shown) el.textContent = shown;
  }

  function cell(tag, text, opts) {
    const c = document.createElement(tag);
    c.textContent = text;
    if (opts && opts.num) c.className = "num";
    if (opts && opts.test) {
      c.setAttribute("data-test", opts.test);
      c.setAttribute("data-value", String(opts.value));
    }
    if (opts && opts.scope) c.setAttribute("scope", opts.scope);
    return c;
  }

  // Replaces a table body's rows; `rows` is a list of cell lists.
  function fillRows(tbody, rows, columns, emptyText) {
    const frag = document.createDocumentFragment();
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = cell("td", emptyText);
      td.colSpan = columns;
      td.className = "empty";
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const c of cells) tr.appendChild(c);
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
  }

  function svgEl(name, attrs, text) {
    const el = document.createElementNS(SVG, name);
    for (const k in attrs) el.setAttribute(k, String(attrs[k]));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  // Keeps the <title> (the chart's accessible name) and replaces the drawing.
  function clearChart(svg) {
    for (const child of Array.from(svg.childNodes)) {
      if (child.nodeName.toLowerCase() !== "title") svg.removeChild(child);
    }
  }

  // Horizontal bars: rows of {label, value, test}.
  function hbars(svg, rows) {
    clearChart(svg);
    const rowH = 24, labelW = 150, width = 480, valueW = 50;
    const height = Math.max(rowH * rows.length + 8, 40);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    const max = Math.max(1, ...rows.map((r) => r.value));
    rows.forEach((r, i) => {
      const y = 4 + i * rowH;
      const w = Math.round(((width - labelW - valueW) * r.value) / max);
      svg.appendChild(svgEl("text", { x: labelW - 8, y: y + 17, "text-anchor": "end" }, r.label));
      const bar = svgEl("rect", { x: labelW, y: y + 3, width: Math.max(w, r.value > 0 ? 2 : 0), height: rowH - 8, class: "bar" });
      bar.appendChild(svgEl("title", {}, r.label + ": " + intFormat.format(r.value)));
      svg.appendChild(bar);
      svg.appendChild(svgEl("text", { x: labelW + w + 6, y: y + 17 }, intFormat.format(r.value)));
    });
    if (rows.length === 0) {
      svg.appendChild(svgEl("text", { x: 8, y: 24 }, "Nothing yet"));
    }
  }

  // Lines over time: series of {name, values}; x labels from `starts` (unix seconds).
  function lines(svg, starts, series) {
    clearChart(svg);
    const width = 480, height = 200, left = 36, right = 6, top = 10, bottom = 22;
    const max = Math.max(1, ...series.flatMap((s) => s.values));
    const n = Math.max(starts.length - 1, 1);
    const x = (i) => left + ((width - left - right) * i) / n;
    const y = (v) => top + (height - top - bottom) * (1 - v / max);
    svg.appendChild(svgEl("line", { x1: left, y1: y(0), x2: width - right, y2: y(0), class: "axis" }));
    svg.appendChild(svgEl("line", { x1: left, y1: top, x2: left, y2: y(0), class: "axis" }));
    svg.appendChild(svgEl("text", { x: left - 6, y: top + 10, "text-anchor": "end" }, intFormat.format(max)));
    svg.appendChild(svgEl("text", { x: left - 6, y: y(0), "text-anchor": "end" }, "0"));
    if (starts.length > 0) {
      svg.appendChild(svgEl("text", { x: left, y: height - 6 }, minuteLabel(starts[0])));
      svg.appendChild(svgEl("text", { x: width - right, y: height - 6, "text-anchor": "end" }, minuteLabel(starts[starts.length - 1])));
    }
    for (const s of series) {
      const points = s.values.map((v, i) => x(i).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
      svg.appendChild(svgEl("polyline", { points: points, class: s.name }));
    }
  }

  // Vertical bars over time (revenue per minute of one currency).
  function columns(svg, starts, values, label) {
    clearChart(svg);
    const width = 480, height = 130, left = 72, bottom = 20, top = 12;
    const max = Math.max(1, ...values);
    const slot = (width - left) / Math.max(values.length, 1);
    values.forEach((v, i) => {
      const h = ((height - top - bottom) * v) / max;
      if (v > 0) {
        const bar = svgEl("rect", { x: left + i * slot + 1, y: height - bottom - h, width: Math.max(slot - 2, 1), height: h, class: "bar" });
        bar.appendChild(svgEl("title", {}, minuteLabel(starts[i]) + ": " + label(v)));
        svg.appendChild(bar);
      }
    });
    svg.appendChild(svgEl("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" }));
    svg.appendChild(svgEl("text", { x: left - 6, y: top + 10, "text-anchor": "end" }, label(max)));
    if (starts.length > 0) {
      svg.appendChild(svgEl("text", { x: left, y: height - 4 }, minuteLabel(starts[0])));
      svg.appendChild(svgEl("text", { x: width, y: height - 4, "text-anchor": "end" }, minuteLabel(starts[starts.length - 1])));
    }
  }

  function renderOrders(d) {
    const o = d.orders;
    setValue(byTest("orders-placed"), o.placed);
    setValue(byTest("orders-confirmed"), o.confirmed);
    setValue(byTest("orders-cancelled"), o.cancelled);
    setValue(byTest("orders-pending"), o.pending);
    fillRows($("cancel-reasons"), o.cancelled_by_reason.map((r) => [
      cell("th", reasonLabel(r.reason), { scope: "row" }),
      cell("td", intFormat.format(r.count), { num: true, test: "cancel-" + r.reason, value: r.count }),
    ]), 2, "No cancellations");
  }

  function renderSeries(d) {
    const starts = d.series.map((m) => m.start);
    lines($("series-chart"), starts, [
      { name: "placed", values: d.series.map((m) => m.placed) },
      { name: "confirmed", values: d.series.map((m) => m.confirmed) },
      { name: "cancelled", values: d.series.map((m) => m.cancelled) },
    ]);
    const sum = (k) => d.series.reduce((a, m) => a + m[k], 0);
    setValue(byTest("series-placed"), sum("placed"));
    setValue(byTest("series-confirmed"), sum("confirmed"));
    setValue(byTest("series-cancelled"), sum("cancelled"));
    $("series-hint").textContent = "Last " + d.series.length + " minutes by event time (UTC).";
    const active = d.series.filter((m) => m.placed || m.confirmed || m.cancelled || m.revenue.length);
    fillRows($("series-table"), active.map((m) => [
      cell("th", minuteLabel(m.start), { scope: "row" }),
      cell("td", intFormat.format(m.placed), { num: true }),
      cell("td", intFormat.format(m.confirmed), { num: true }),
      cell("td", intFormat.format(m.cancelled), { num: true }),
      cell("td", m.revenue.map((r) => moneyFormat(r.currency, r.amount_minor)).join(", ")),
    ]), 5, "No orders in this window");
  }

  function renderFunnel(d) {
    const f = d.funnel;
    hbars($("funnel-chart"), FUNNEL_STEPS.map(([k, label]) => ({ label: label, value: f[k] })));
    fillRows($("funnel-table"), FUNNEL_STEPS.map(([k, label]) => [
      cell("th", label, { scope: "row" }),
      cell("td", intFormat.format(f[k]), { num: true, test: "funnel-" + k, value: f[k] }),
    ]), 2, "");
    const conversion = f.placed > 0 ? (100 * f.confirmed) / f.placed : 0;
    setValue(byTest("conversion"), conversion.toFixed(1), f.placed > 0 ? conversion.toFixed(1) + "%" : "–");
  }

  function renderRevenue(d) {
    fillRows($("revenue-table"), d.revenue.map((r) => [
      cell("th", r.currency, { scope: "row" }),
      cell("td", intFormat.format(r.confirmed_orders), { num: true, test: "revenue-orders-" + r.currency, value: r.confirmed_orders }),
      cell("td", moneyFormat(r.currency, r.revenue_minor), { num: true, test: "revenue-" + r.currency, value: r.revenue_minor }),
      cell("td", moneyFormat(r.currency, r.average_order_value_minor), { num: true, test: "aov-" + r.currency, value: r.average_order_value_minor }),
    ]), 4, "No confirmed orders yet");
    // One small chart per currency: revenue per minute.
    const holder = $("revenue-charts");
    const starts = d.series.map((m) => m.start);
    const wanted = d.revenue.map((r) => r.currency);
    for (const old of Array.from(holder.children)) {
      if (!wanted.includes(old.getAttribute("data-currency"))) holder.removeChild(old);
    }
    for (const currency of wanted) {
      let fig = holder.querySelector('figure[data-currency="' + CSS.escape(currency) + '"]');
      if (!fig) {
        fig = document.createElement("figure");
        fig.setAttribute("data-currency", currency);
        const svg = svgEl("svg", { class: "chart", role: "img", viewBox: "0 0 480 130", "data-test": "revenue-chart-" + currency });
        svg.appendChild(svgEl("title", {}, "Revenue per minute in " + currency + " (table: Orders per minute)"));
        fig.appendChild(svg);
        const cap = document.createElement("figcaption");
        cap.textContent = "Revenue per minute, " + currency;
        fig.appendChild(cap);
        holder.appendChild(fig);
      }
      const values = d.series.map((m) => {
        const r = m.revenue.find((x) => x.currency === currency);
        return r ? r.amount_minor : 0;
      });
      columns(fig.querySelector("svg"), starts, values, (v) => moneyFormat(currency, v));
    }
  }

  function renderSkus(d) {
    hbars($("sku-chart"), d.top_skus.map((s) => ({ label: s.sku, value: s.units })));
    fillRows($("sku-table"), d.top_skus.map((s) => [
      cell("th", s.sku, { scope: "row" }),
      cell("td", intFormat.format(s.units), { num: true, test: "sku-units-" + s.sku, value: s.units }),
      cell("td", intFormat.format(s.orders), { num: true, test: "sku-orders-" + s.sku, value: s.orders }),
    ]), 3, "No confirmed orders yet");
  }

  function renderLowStock(d) {
    fillRows($("low-table"), d.low_stock.map((l) => [
      cell("th", l.sku, { scope: "row" }),
      cell("td", intFormat.format(l.available), { num: true, test: "low-available-" + l.sku, value: l.available }),
      cell("td", intFormat.format(l.threshold), { num: true, test: "low-threshold-" + l.sku, value: l.threshold }),
      cell("td", new Date(l.detected_at).toISOString().replace("T", " ").slice(0, 19) + " UTC"),
    ]), 4, "No SKU is low");
  }

  function renderSurveys(d) {
    const s = d.surveys;
    setValue(byTest("nps"), s.nps, s.completed > 0 ? s.nps.toFixed(1) : "–");
    setValue(byTest("surveys-requested"), s.requested);
    setValue(byTest("surveys-completed"), s.completed);
    setValue(byTest("surveys-promoters"), s.promoters);
    setValue(byTest("surveys-passives"), s.passives);
    setValue(byTest("surveys-detractors"), s.detractors);
    const n = d.notifications;
    setValue(byTest("notifications-sent"), n.sent);
    setValue(byTest("notifications-failed"), n.failed);
    setValue(byTest("notifications-failed-permanent"), n.failed_permanent);
  }

  function renderOps(d) {
    const ops = d.ops;
    const problems = $("ops-problems");
    problems.hidden = ops.problems.length === 0;
    problems.textContent = ops.problems.length ? "Not everything could be read: " + ops.problems.join("; ") : "";
    setValue(byTest("dead-letters"), ops.dead_letters === null ? "unknown" : ops.dead_letters,
      ops.dead_letters === null ? "unknown" : intFormat.format(ops.dead_letters));
    fillRows($("dead-table"), ops.dead_letters_by_consumer.map((x) => [
      cell("th", x.consumer, { scope: "row" }),
      cell("td", intFormat.format(x.count), { num: true, test: "dead-letters-" + x.consumer, value: x.count }),
    ]), 2, "None");
    const progress = {};
    for (const p of d.streams) progress[p.stream] = p;
    fillRows($("stream-table"), ops.streams.map((s) => {
      const p = progress[s.stream];
      return [
        cell("th", s.stream, { scope: "row" }),
        cell("td", intFormat.format(s.messages), { num: true, test: "stream-messages-" + s.stream, value: s.messages }),
        cell("td", intFormat.format(s.last_sequence), { num: true }),
        cell("td", p ? intFormat.format(p.last_sequence) : "unknown", { num: true }),
        cell("td", p ? intFormat.format(p.pending) : "unknown", { num: true, test: "stream-pending-" + s.stream, value: p ? p.pending : "unknown" }),
      ];
    }), 5, "No stream could be read");
    fillRows($("consumer-table"), ops.consumers.map((c) => [
      cell("td", c.stream),
      cell("th", c.consumer, { scope: "row" }),
      cell("td", intFormat.format(c.pending), { num: true, test: "consumer-pending-" + c.stream + "-" + c.consumer, value: c.pending }),
      cell("td", intFormat.format(c.ack_pending), { num: true }),
      cell("td", intFormat.format(c.redelivered), { num: true, test: "consumer-redelivered-" + c.stream + "-" + c.consumer, value: c.redelivered }),
    ]), 5, "No consumer could be read");
    $("outbox-note").textContent = ops.outbox;
  }

  function render(d) {
    if (!d) return;
    setValue(byTest("revision"), d.revision);
    setValue(byTest("generation"), d.generation);
    const asOf = $("as-of");
    asOf.setAttribute("datetime", d.as_of);
    asOf.textContent = new Date(d.as_of).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    renderOrders(d);
    renderSeries(d);
    renderFunnel(d);
    renderRevenue(d);
    renderSkus(d);
    renderLowStock(d);
    renderSurveys(d);
    renderOps(d);
    document.getElementById("main").setAttribute("data-rendered", "client");
  }

  function status(state, text) {
    const el = $("status");
    el.setAttribute("data-state", state);
    if (el.textContent !== text) el.textContent = text;
  }

  let initial = null;
  try {
    initial = JSON.parse($("initial-data").textContent);
  } catch (e) {
    initial = null;
  }
  render(initial);
  status(initial ? "live" : "down", initial ? "Connecting for live updates…" : "Waiting for data…");

  // Follow updates once the page has loaded, so the open stream never holds up its load.
  function follow() {
    if (typeof EventSource !== "function") {
      status("down", "This browser cannot follow live updates; reload for fresh numbers.");
      return;
    }
    const source = new EventSource("/events");
    source.addEventListener("dashboard", (e) => {
      render(JSON.parse(e.data));
      status("live", "Live");
    });
    source.addEventListener("unavailable", (e) => status("down", "Read model unavailable: " + e.data));
    source.onerror = () => status("down", "Reconnecting…");
  }
  if (document.readyState === "complete") follow();
  else window.addEventListener("load", follow);
})();
