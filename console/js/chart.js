// The overview's chart: per endpoint, its deliveries of a window by outcome as one stacked
// horizontal bar, drawn as inline SVG (no library; the page's CSP allows no other source).

import { h } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
/** The outcomes, in the order the bars stack them; each has a colour in console.css. */
export const OUTCOMES = ['delivered', 'failed', 'pending', 'skipped', 'cancelled'];

function svg(tag, attributes = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, String(value));
  for (const child of children) el.append(child);
  return el;
}

/**
 * `rows`: `[{label, counts: {delivered, failed, ...}}]`. The bars share one scale (the largest
 * total), so endpoints compare at a glance; each segment's count is in its tooltip, and the
 * whole chart's numbers in its accessible name (the table beside it has them too).
 */
export function outcomeChart(id, rows) {
  const labelWidth = 190;
  const barWidth = 360;
  const rowHeight = 30;
  const width = labelWidth + barWidth + 60;
  const height = rows.length * rowHeight + 6;
  const largest = Math.max(1, ...rows.map((r) => OUTCOMES.reduce((sum, o) => sum + r.counts[o], 0)));
  const summary = rows.map((r) =>
    `${r.label}: ${OUTCOMES.filter((o) => r.counts[o]).map((o) => `${r.counts[o]} ${o}`).join(', ') || 'no deliveries'}`);

  const chart = svg('svg', {
    id, class: 'chart', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
    'aria-label': `Deliveries by outcome over the last 24 hours. ${summary.join('. ')}.`,
  });
  rows.forEach((row, i) => {
    const y = i * rowHeight + 4;
    const label = row.label.length > 26 ? `${row.label.slice(0, 25)}…` : row.label;
    chart.append(svg('text', { x: 0, y: y + 16, class: 'chart-label' }, label));
    let x = labelWidth;
    let total = 0;
    for (const outcome of OUTCOMES) {
      const count = row.counts[outcome];
      if (!count) continue;
      const w = Math.max(2, (count / largest) * barWidth);
      chart.append(svg('rect', { x, y, width: w, height: 20, class: `bar bar-${outcome}`, 'data-count': count },
        svg('title', {}, `${count} ${outcome}`)));
      x += w;
      total += count;
    }
    if (!total) chart.append(svg('rect', { x, y: y + 9, width: barWidth, height: 2, class: 'bar-empty' }));
    chart.append(svg('text', { x: x + 6, y: y + 16, class: 'chart-total' }, String(total)));
  });
  return chart;
}

/** The colours' key, in words. */
export function legend() {
  return h('ul', { class: 'legend', 'aria-hidden': 'true' },
    OUTCOMES.map((o) => h('li', {}, h('span', { class: `swatch bar-${o}` }), o)));
}
