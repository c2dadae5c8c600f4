// Charts drawn as SVG from JSON data blocks. Loaded as a file (the Content-Security-Policy
// forbids inline scripts); no library, no inline styles: SVG presentation attributes and the
// chart classes of app.css only. The table beside each chart is the accessible fallback, so
// the pages work without this script.
//
// Contract, one per chart:
//   <div class="chart" data-chart="line|donut" data-source="ID" data-empty="No data yet"
//        role="img" aria-label="..."></div>
//   {{ data|json_script:"ID" }}
// with data = {"unit": "USD", "series": [{"name": "...", "points": [[x, "decimal"], ...]}]}.
// x is an ISO date ("YYYY-MM-DD") or a label. A point may carry a third element, the server's
// display of the value ("1,250,000.50", "61.23%"); labels show it, else the decimal string.
// Values go through Number() for drawing only: every number a reader sees comes from the
// server.
//
// "line": one polyline per series on one y scale shared by the chart's series (amounts in two
// currencies belong in two charts, as the portfolio page draws NAV in USD and in KZT), labels
// for the lowest and highest value and the first and last x, and a legend of series names.
// Dates are placed by time, other x labels evenly.
// "donut": one arc per point of the first series with a positive value, and a legend of labels
// with each display value (the share, on the portfolio page).
// No point at all: the data-empty text instead of a chart.
(function () {
  "use strict";

  const SVG_NS = "http://www.w3.org/2000/svg";
  const WIDTH = 640;
  const HEIGHT = 240;
  const ISO_DATE = /^\d{4}-\d{2}-\d{2}$/;
  // Colour classes (chart__line--N, chart__slice--N, chart-legend__swatch--N) cycle after this.
  const PALETTE_SIZE = 6;

  // ---- Pure helpers (exported for the node tests) -------------------------------------------

  /** [lowest, highest] of finite numbers; a flat series gets room above and below. */
  function extent(values) {
    const finite = values.filter(Number.isFinite);
    if (!finite.length) return null;
    let low = Math.min(...finite);
    let high = Math.max(...finite);
    if (low === high) {
      const pad = Math.abs(low) || 1;
      low -= pad;
      high += pad;
    }
    return [low, high];
  }

  /** A linear map from the domain [d0, d1] onto the range [r0, r1]. */
  function scale(domain, range) {
    const [d0, d1] = domain;
    const [r0, r1] = range;
    const span = d1 - d0 || 1;
    return (value) => r0 + ((value - d0) / span) * (r1 - r0);
  }

  /** Days since the epoch of an ISO date, or null for any other label. */
  function dayNumber(label) {
    if (typeof label !== "string" || !ISO_DATE.test(label)) return null;
    const [y, m, d] = label.split("-").map(Number);
    return Date.UTC(y, m - 1, d) / 86400000;
  }

  /** Numeric x of each label: days for ISO dates (all of them must be), else the index. */
  function xValues(labels) {
    const days = labels.map(dayNumber);
    return days.every((d) => d !== null) ? days : labels.map((_, i) => i);
  }

  /** Parse a chart's data: series with numeric values, points with unusable values dropped. */
  function normalise(data) {
    const series = (data && Array.isArray(data.series) ? data.series : []).map((s) => ({
      name: String(s.name ?? ""),
      points: (Array.isArray(s.points) ? s.points : [])
        .filter((p) => Array.isArray(p) && p[1] !== null && p[1] !== undefined && p[1] !== "")
        .filter((p) => Number.isFinite(Number(p[1])))
        .map((p) => ({
          x: p[0],
          raw: String(p[1]),
          value: Number(p[1]),
          display: p.length > 2 && p[2] !== null && p[2] !== "" ? String(p[2]) : String(p[1]),
        })),
    }));
    return { unit: data && data.unit ? String(data.unit) : "", series };
  }

  /** Where the plot goes in an SVG ``width`` wide: room on the left for the longest value
   * label (about 6.5 units a character at the labels' 11px). */
  function plotBox(labelLength, width = WIDTH) {
    const left = Math.min(160, 16 + Math.ceil(labelLength * 6.5));
    return { left, right: Math.max(left + 40, width - 16), top: 16, bottom: HEIGHT - 28 };
  }

  /**
   * Screen coordinates of every series of a normalised line chart inside ``box``, sharing one
   * x and one y scale. Returns [{name, coords: [[x, y], ...]}] plus the extremes for labels.
   */
  function layoutLines(series, box) {
    const all = series.flatMap((s) => s.points);
    const yDomain = extent(all.map((p) => p.value));
    if (!yDomain) return null;
    const xs = series.map((s) => xValues(s.points.map((p) => p.x)));
    const xDomain = extent(xs.flat());
    const sameX = xs.flat().every((x) => x === xs.flat()[0]);
    const toX = sameX ? () => (box.left + box.right) / 2 : scale(xDomain, [box.left, box.right]);
    const toY = scale(yDomain, [box.bottom, box.top]);
    const lines = series.map((s, i) => ({
      name: s.name,
      coords: s.points.map((p, j) => [round(toX(xs[i][j])), round(toY(p.value))]),
    }));
    let low = all[0];
    let high = all[0];
    let first = null;
    let last = null;
    series.forEach((s, i) => {
      s.points.forEach((p, j) => {
        if (p.value < low.value) low = p;
        if (p.value > high.value) high = p;
        if (first === null || xs[i][j] < first.x) first = { x: xs[i][j], label: p.x };
        if (last === null || xs[i][j] > last.x) last = { x: xs[i][j], label: p.x };
      });
    });
    return { lines, low, high, first: first.label, last: last.label };
  }

  /** An SVG polyline ``points`` attribute from [[x, y], ...]. */
  function pointsAttribute(coords) {
    return coords.map(([x, y]) => `${x},${y}`).join(" ");
  }

  /**
   * Donut slices of ``values`` (positive ones; others are skipped and get null) as SVG path
   * data, clockwise from twelve o'clock, around (cx, cy) between radii ``inner`` and ``outer``.
   */
  function donutPaths(values, cx, cy, outer, inner) {
    const total = values.reduce((sum, v) => (v > 0 && Number.isFinite(v) ? sum + v : sum), 0);
    if (!(total > 0)) return values.map(() => null);
    let angle = -Math.PI / 2;
    return values.map((v) => {
      if (!(v > 0 && Number.isFinite(v))) return null;
      const fraction = v / total;
      const start = angle;
      const end = angle + fraction * 2 * Math.PI;
      angle = end;
      if (fraction >= 0.999999) {
        // A whole ring: two half arcs, as one arc cannot start and end at the same point.
        return ringPath(cx, cy, outer, inner);
      }
      return arcPath(cx, cy, outer, inner, start, end);
    });
  }

  function arcPath(cx, cy, outer, inner, start, end) {
    const large = end - start > Math.PI ? 1 : 0;
    const p = (r, a) => `${round(cx + r * Math.cos(a))} ${round(cy + r * Math.sin(a))}`;
    return (
      `M ${p(outer, start)} A ${outer} ${outer} 0 ${large} 1 ${p(outer, end)} ` +
      `L ${p(inner, end)} A ${inner} ${inner} 0 ${large} 0 ${p(inner, start)} Z`
    );
  }

  function ringPath(cx, cy, outer, inner) {
    return (
      `M ${cx} ${cy - outer} A ${outer} ${outer} 0 1 1 ${cx} ${cy + outer} ` +
      `A ${outer} ${outer} 0 1 1 ${cx} ${cy - outer} Z ` +
      `M ${cx} ${cy - inner} A ${inner} ${inner} 0 1 0 ${cx} ${cy + inner} ` +
      `A ${inner} ${inner} 0 1 0 ${cx} ${cy - inner} Z`
    );
  }

  function round(n) {
    return Math.round(n * 100) / 100;
  }

  // ---- Drawing ------------------------------------------------------------------------------

  function svgElement(name, attributes) {
    const element = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes || {})) {
      element.setAttribute(key, String(value));
    }
    return element;
  }

  function text(x, y, content, attributes) {
    const element = svgElement("text", { x, y, class: "chart__label", ...attributes });
    element.textContent = content;
    return element;
  }

  function newSvg(width) {
    return svgElement("svg", {
      viewBox: `0 0 ${width} ${HEIGHT}`,
      preserveAspectRatio: "xMidYMid meet",
      "aria-hidden": "true",
      focusable: "false",
    });
  }

  function legend(items) {
    const list = document.createElement("ul");
    list.className = "chart-legend";
    items.forEach(({ label, colour }) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = `chart-legend__swatch chart-legend__swatch--${colour % PALETTE_SIZE}`;
      item.append(swatch, document.createTextNode(label));
      list.append(item);
    });
    return list;
  }

  function drawLine(container, data) {
    const longest = Math.max(
      ...data.series.flatMap((s) => s.points.map((p) => p.display.length)),
      data.unit.length
    );
    // As wide as its container, so labels keep their size on narrow screens and wide ones.
    const width = Math.max(280, Math.round(container.clientWidth || WIDTH));
    const box = plotBox(longest, width);
    const layout = layoutLines(data.series, box);
    const svg = newSvg(width);
    const { left, right, top, bottom } = box;
    svg.append(
      svgElement("line", { class: "chart__axis", x1: left, y1: bottom, x2: right, y2: bottom }),
      svgElement("line", { class: "chart__axis", x1: left, y1: top, x2: left, y2: bottom })
    );
    layout.lines.forEach((line, i) => {
      const colour = i % PALETTE_SIZE;
      if (line.coords.length === 1) {
        const [cx, cy] = line.coords[0];
        const dot = { class: `chart__dot chart__dot--${colour}`, cx, cy, r: 4 };
        svg.append(svgElement("circle", dot));
      } else {
        const points = pointsAttribute(line.coords);
        svg.append(svgElement("polyline", { class: `chart__line chart__line--${colour}`, points }));
      }
    });
    const labelX = box.left - 6;
    svg.append(
      text(labelX, box.top + 4, layout.high.display, { "text-anchor": "end" }),
      text(labelX, box.bottom, layout.low.display, { "text-anchor": "end" }),
      text(labelX, box.bottom + 18, data.unit, { "text-anchor": "end" }),
      text(box.left, box.bottom + 18, String(layout.first), { "text-anchor": "start" })
    );
    if (layout.last !== layout.first) {
      svg.append(text(box.right, box.bottom + 18, String(layout.last), { "text-anchor": "end" }));
    }
    container.append(svg, legend(data.series.map((s, i) => ({ label: s.name, colour: i }))));
  }

  function drawDonut(container, data) {
    const points = data.series[0].points;
    const size = HEIGHT;
    const centre = size / 2;
    const paths = donutPaths(points.map((p) => p.value), centre, centre, centre - 8, size / 4);
    const svg = svgElement("svg", {
      viewBox: `0 0 ${size} ${size}`,
      class: "chart__donut",
      "aria-hidden": "true",
      focusable: "false",
    });
    const items = [];
    paths.forEach((d, i) => {
      if (d === null) return;
      const slice = `chart__slice chart__slice--${i % PALETTE_SIZE}`;
      svg.append(svgElement("path", { d, class: slice, "fill-rule": "evenodd" }));
      items.push({ label: `${points[i].x}: ${points[i].display}`, colour: i });
    });
    container.append(svg, legend(items));
  }

  function showEmpty(container) {
    container.classList.add("chart--empty");
    const message = document.createElement("p");
    message.className = "chart__empty muted";
    message.textContent = container.dataset.empty || "No data yet";
    container.append(message);
  }

  function render(container) {
    const source = document.getElementById(container.dataset.source);
    let data = null;
    try {
      data = source ? normalise(JSON.parse(source.textContent)) : null;
    } catch (error) {
      data = null;
    }
    container.replaceChildren();
    container.classList.remove("chart--empty");
    const kind = container.dataset.chart;
    const hasPoints = data && data.series.some((s) => s.points.length > 0);
    const drawable =
      kind === "donut" ? hasPoints && data.series[0].points.some((p) => p.value > 0) : hasPoints;
    if (!drawable) {
      showEmpty(container);
    } else if (kind === "donut") {
      drawDonut(container, data);
    } else {
      drawLine(container, data);
    }
  }

  function renderAll() {
    document.querySelectorAll(".chart[data-source]").forEach(render);
  }

  // Line charts are drawn to their container's width: redraw them once a resize settles.
  let resizeTimer = null;
  function redrawLinesLater() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      document.querySelectorAll('.chart[data-source][data-chart="line"]').forEach(render);
    }, 200);
  }

  const api = {
    extent,
    scale,
    dayNumber,
    xValues,
    normalise,
    plotBox,
    layoutLines,
    pointsAttribute,
    donutPaths,
    render,
    renderAll,
  };
  if (typeof module !== "undefined" && module.exports) {
    module.exports = api;
  }
  if (typeof window !== "undefined") {
    window.AlemCharts = api;
  }
  if (typeof document !== "undefined") {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", renderAll);
    } else {
      renderAll();
    }
    window.addEventListener("resize", redrawLinesLater);
  }
})();
