// A small SVG chart library for the dashboard: grouped bars and lines over months, with
// axes, gridlines, a legend, a <title> per mark (hover and screen readers) and a data table.
'use strict';

const Charts = (() => {
  const NS = 'http://www.w3.org/2000/svg';
  const W = 560;
  const H = 250;
  const M = { top: 12, right: 12, bottom: 30, left: 64 };

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  // A round upper bound and step for the axis: 1, 2, 2.5 or 5 × 10^n.
  // Counts (`integer`) get whole steps.
  function scale(max, ticks = 4, integer = false) {
    if (!(max > 0)) return integer ? { top: 4, step: 1 } : { top: 1, step: 0.25 };
    const raw = max / ticks;
    const pow = 10 ** Math.floor(Math.log10(raw));
    const multiples = integer && pow < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
    const steps = multiples.map((m) => Math.max(integer ? 1 : 0, m * pow));
    const step = steps.find((s) => s >= raw);
    return { top: step * Math.ceil(max / step - 1e-9), step };
  }

  function monthLabel(ym, withYear) {
    const [y, m] = ym.split('-').map(Number);
    const d = new Date(Date.UTC(y, m - 1, 1));
    return d.toLocaleDateString(undefined, withYear ? { month: 'short', year: '2-digit', timeZone: 'UTC' } : { month: 'short', timeZone: 'UTC' });
  }

  function frame(labels, top, step, format) {
    const plotW = W - M.left - M.right;
    const plotH = H - M.top - M.bottom;
    const y = (v) => M.top + plotH - (plotH * v) / top;
    const g = svg('g', { 'aria-hidden': 'true' });
    for (let v = 0; v <= top + step / 2; v += step) {
      g.append(svg('line', { class: 'grid-line', x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
      g.append(svg('text', { class: 'axis-label', x: M.left - 8, y: y(v) + 4, 'text-anchor': 'end' }, format(v, true)));
    }
    const band = plotW / Math.max(1, labels.length);
    const every = Math.ceil(labels.length / 12);
    labels.forEach((ym, i) => {
      if (i % every !== 0) return;
      // The year on each January, and on the first month unless a January follows closely.
      const withYear = ym.endsWith('-01') || (i === 0 && !labels.slice(1, 3).some((l) => l.endsWith('-01')));
      g.append(svg('text', { class: 'axis-label', x: M.left + band * (i + 0.5), y: H - 10, 'text-anchor': 'middle' }, monthLabel(ym, withYear)));
    });
    return { g, y, band, plotH };
  }

  function dataTable(labels, series, format) {
    return UI.el('details', { class: 'data' },
      UI.el('summary', {}, 'Show data'),
      UI.el('div', { class: 'table-wrap' }, UI.el('table', {},
        UI.el('thead', {}, UI.el('tr', {}, UI.el('th', { scope: 'col' }, 'Month'), series.map((s) => UI.el('th', { scope: 'col', class: 'num' }, s.name)))),
        UI.el('tbody', {}, labels.map((ym, i) => UI.el('tr', {},
          UI.el('th', { scope: 'row' }, monthLabel(ym, true)),
          series.map((s) => UI.el('td', { class: 'num' }, format(s.values[i])))))))));
  }

  function legend(series) {
    return UI.el('div', { class: 'legend', 'aria-hidden': 'true' }, series.map((s) => UI.el('span', { class: 's-' + s.swatch }, s.name)));
  }

  function summary(title, labels, series, format) {
    const last = labels.length - 1;
    return title + ', ' + monthLabel(labels[0], true) + ' to ' + monthLabel(labels[last], true) + '. '
      + series.map((s) => s.name + ' in ' + monthLabel(labels[last], true) + ': ' + format(s.values[last])).join('; ') + '.';
  }

  // series: [{ name, values, swatch: 'bar' | 'bar-alt' }]
  function bars(container, { title, labels, series, format, integer = false }) {
    const max = Math.max(0, ...series.flatMap((s) => s.values));
    const { top, step } = scale(max, 4, integer);
    const { g, y, band } = frame(labels, top, step, format);
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary(title, labels, series, format) }, g);
    const inner = band * 0.7;
    const each = inner / series.length;
    labels.forEach((ym, i) => {
      series.forEach((s, k) => {
        const v = Math.max(0, s.values[i] || 0);
        const x = M.left + band * i + (band - inner) / 2 + each * k;
        root.append(svg('rect', {
          class: 'bar' + (s.swatch === 'bar-alt' ? ' alt' : ''), x: x + 0.5, y: y(v), width: Math.max(1, each - 1), height: Math.max(0, y(0) - y(v)), rx: 2,
        }, svg('title', {}, monthLabel(ym, true) + ' · ' + s.name + ': ' + format(s.values[i]))));
      });
    });
    container.replaceChildren(root, legend(series), dataTable(labels, series, format));
  }

  // series: [{ name, values, swatch: 'line' | 'line-alt' }]; `area` shades under the first.
  function lines(container, { title, labels, series, format, area = false }) {
    const max = Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined)));
    const { top, step } = scale(max);
    const { g, y, band } = frame(labels, top, step, format);
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary(title, labels, series, format) }, g);
    const x = (i) => M.left + band * (i + 0.5);
    series.forEach((s, k) => {
      const alt = s.swatch === 'line-alt' ? ' alt' : '';
      const pts = s.values.map((v, i) => (v === null || v === undefined ? null : [x(i), y(v)]));
      const segments = [];
      let current = [];
      for (const p of pts) {
        if (p) current.push(p);
        else if (current.length) { segments.push(current); current = []; }
      }
      if (current.length) segments.push(current);
      for (const seg of segments) {
        const d = seg.map((p, i) => (i ? 'L' : 'M') + p[0].toFixed(1) + ' ' + p[1].toFixed(1)).join(' ');
        if (area && k === 0) {
          root.append(svg('path', { class: 'area', d: d + ` L${seg[seg.length - 1][0].toFixed(1)} ${y(0)} L${seg[0][0].toFixed(1)} ${y(0)} Z` }));
        }
        root.append(svg('path', { class: 'line' + alt, d }));
      }
      pts.forEach((p, i) => {
        if (!p) return;
        root.append(svg('circle', { class: 'dot' + alt, cx: p[0], cy: p[1], r: labels.length > 24 ? 2 : 3.5 },
          svg('title', {}, monthLabel(labels[i], true) + ' · ' + s.name + ': ' + format(s.values[i]))));
      });
    });
    container.replaceChildren(root, legend(series), dataTable(labels, series, format));
  }

  return { bars, lines, monthLabel };
})();
