// Pure helpers of alem/static/alem/charts.js, run by tests/test_charts_js.py with `node --test`.
// Drawing into a real page is checked by the browser tests.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

const charts = require(path.join(__dirname, "..", "..", "alem", "static", "alem", "charts.js"));

test("extent spans the finite values and pads a flat series", () => {
  assert.deepEqual(charts.extent([3, 1, 2, NaN]), [1, 3]);
  assert.deepEqual(charts.extent([5, 5]), [0, 10]);
  assert.deepEqual(charts.extent([0]), [-1, 1]);
  assert.equal(charts.extent([]), null);
});

test("scale maps the domain onto the range, inverted for the y axis", () => {
  const y = charts.scale([100, 200], [212, 16]);
  assert.equal(y(100), 212);
  assert.equal(y(200), 16);
  assert.equal(y(150), 114);
});

test("ISO dates are placed by time, other labels by position", () => {
  assert.equal(charts.dayNumber("1970-01-02"), 1);
  assert.equal(charts.dayNumber("BNB"), null);
  assert.deepEqual(charts.xValues(["2025-12-01", "2025-12-04"]), [20423, 20426]);
  assert.deepEqual(charts.xValues(["BNB", "2025-12-04"]), [0, 1]);
});

test("normalise keeps the server's strings for display and numbers for drawing only", () => {
  const data = charts.normalise({
    unit: "USD",
    series: [
      {
        name: "NAV (USD)",
        points: [
          ["2025-12-01", "1000000.25", "1,000,000.25"],
          ["2025-12-02", "0.1"],
          ["2025-12-03", null],
          ["2025-12-04", "not a number"],
        ],
      },
    ],
  });
  assert.equal(data.unit, "USD");
  assert.deepEqual(data.series[0].points, [
    { x: "2025-12-01", raw: "1000000.25", value: 1000000.25, display: "1,000,000.25" },
    { x: "2025-12-02", raw: "0.1", value: 0.1, display: "0.1" },
  ]);
  assert.deepEqual(charts.normalise(null), { unit: "", series: [] });
});

test("layoutLines puts the first date left, the last right, the highest value on top", () => {
  const data = charts.normalise({
    unit: "USD",
    series: [{ name: "NAV", points: [["2025-12-01", "10"], ["2025-12-03", "30"], ["2025-12-02", "20"]] }],
  });
  const box = { left: 100, right: 300, top: 10, bottom: 110 };
  const layout = charts.layoutLines(data.series, box);
  assert.deepEqual(layout.lines[0].coords, [[100, 110], [300, 10], [200, 60]]);
  assert.equal(layout.low.display, "10");
  assert.equal(layout.high.display, "30");
  assert.equal(layout.first, "2025-12-01");
  assert.equal(layout.last, "2025-12-03");
  assert.equal(charts.pointsAttribute(layout.lines[0].coords), "100,110 300,10 200,60");
});

test("a single point sits in the middle of the plot", () => {
  const data = charts.normalise({ series: [{ name: "NAV", points: [["2025-12-01", "7"]] }] });
  const layout = charts.layoutLines(data.series, { left: 0, right: 200, top: 0, bottom: 100 });
  assert.deepEqual(layout.lines[0].coords, [[100, 50]]);
});

test("plotBox leaves room for the longest label, within bounds", () => {
  assert.equal(charts.plotBox(0).left, 16);
  assert.equal(charts.plotBox(10).left, 81);
  assert.equal(charts.plotBox(100).left, 160);
});

test("donut slices share the circle by value, skipping what is not positive", () => {
  const [first, second, skipped] = charts.donutPaths([1, 3, -2], 100, 100, 90, 50);
  // A quarter from twelve o'clock to three, then the rest round to twelve again.
  assert.equal(first, "M 100 10 A 90 90 0 0 1 190 100 L 150 100 A 50 50 0 0 0 100 50 Z");
  assert.equal(second, "M 190 100 A 90 90 0 1 1 100 10 L 100 50 A 50 50 0 1 0 150 100 Z");
  assert.equal(skipped, null);
});

test("a single slice is a whole ring and nothing positive draws nothing", () => {
  const [ring] = charts.donutPaths([5], 100, 100, 90, 50);
  assert.match(ring, /^M 100 10 A 90 90 0 1 1 100 190 A 90 90 0 1 1 100 10 Z M 100 50 /);
  assert.deepEqual(charts.donutPaths([0, -1], 100, 100, 90, 50), [null, null]);
});
