/** A small hand-written SVG line chart (no dependencies): one polyline per series, log-scale y optional. */
export interface Series {
  name: string;
  points: Array<[number, number]>;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function lineChart(opts: { title: string; xLabel: string; yLabel: string; series: Series[]; logY?: boolean }): string {
  const W = 720;
  const H = 420;
  const L = 70;
  const R = 220;
  const T = 40;
  const B = 50;
  const pts = opts.series
    .flatMap((s) => s.points)
    .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.logY || y > 0));
  const xMax = Math.max(1, ...pts.map(([x]) => x));
  const ys = pts.map(([, y]) => y);
  const fy = (y: number) => (opts.logY ? Math.log10(Math.max(y, 1e-3)) : y);
  const yLo = opts.logY ? Math.floor(Math.min(0, ...ys.map(fy))) : 0;
  const yHi = opts.logY ? Math.ceil(Math.max(1, ...ys.map(fy))) : Math.max(1, ...ys) * 1.1;
  const px = (x: number) => L + (x / xMax) * (W - L - R);
  const py = (y: number) => H - B - ((fy(y) - yLo) / (yHi - yLo || 1)) * (H - T - B);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - R / 2}" y="22" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${esc(opts.xLabel)}</text>`,
    `<text transform="translate(18 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const x = (xMax * i) / 5;
    out.push(`<text x="${px(x)}" y="${H - B + 16}" text-anchor="middle">${Math.round(x)}</text>`);
  }
  const yTicks = opts.logY
    ? Array.from({ length: yHi - yLo + 1 }, (_, i) => 10 ** (yLo + i))
    : Array.from({ length: 6 }, (_, i) => (yHi * i) / 5);
  for (const y of yTicks) {
    out.push(`<line x1="${L}" y1="${py(y)}" x2="${W - R}" y2="${py(y)}" stroke="#ddd"/>`);
    out.push(`<text x="${L - 6}" y="${py(y) + 4}" text-anchor="end">${y >= 100 ? Math.round(y) : +y.toPrecision(2)}</text>`);
  }
  opts.series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length] as string;
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.logY || y > 0));
    if (p.length > 0)
      out.push(
        `<polyline fill="none" stroke="${c}" stroke-width="2" points="${p.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')}"/>`,
      );
    for (const [x, y] of p) out.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${c}"/>`);
    out.push(`<rect x="${W - R + 12}" y="${T + i * 20}" width="12" height="12" fill="${c}"/>`);
    out.push(`<text x="${W - R + 30}" y="${T + i * 20 + 10}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
