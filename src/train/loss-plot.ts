/**
 * The loss curve as a self-contained SVG: training loss per step as a line, validation loss as
 * points joined by a dashed line, axes with round-numbered ticks, a legend and a title.
 */

export interface LossRecord {
  step: number;
  loss: number;
  val_loss?: number;
}

const WIDTH = 720;
const HEIGHT = 420;
const MARGIN = { left: 64, right: 24, top: 44, bottom: 52 };
const TRAIN_COLOR = '#1f77b4';
const VAL_COLOR = '#d62728';

interface Axis {
  lo: number;
  hi: number;
  ticks: number[];
  decimals: number;
}

/** Ticks at 1, 2 or 5 × 10^k, about `count` of them, on a range widened to the nearest ticks. */
function niceAxis(min: number, max: number, count: number, integer: boolean): Axis {
  if (max - min < 1e-12) {
    const pad = integer ? 1 : Math.max(Math.abs(min) * 0.1, 0.1);
    [min, max] = [min - pad, max + pad];
  }
  const rough = (max - min) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) ?? 10 * power;
  if (integer) step = Math.max(1, Math.round(step));
  const lo = Math.floor(min / step) * step;
  const hi = Math.ceil(max / step) * step;
  const ticks: number[] = [];
  for (let i = 0; lo + i * step <= hi + step * 1e-9; i++) ticks.push(lo + i * step);
  return { lo, hi, ticks, decimals: Math.max(0, -Math.floor(Math.log10(step))) };
}

const fmt = (v: number): string => String(Math.round(v * 100) / 100);

function pathOf(points: [number, number][]): string {
  return points.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${fmt(x)},${fmt(y)}`).join(' ');
}

/** The training run's loss curve (the CLI's loss.svg, the web page's live chart) as SVG text. */
export function lossCurveSvg(records: readonly LossRecord[]): string {
  const train = records.filter(({ step, loss }) => Number.isFinite(step) && Number.isFinite(loss));
  const val = records.flatMap(({ step, val_loss }) =>
    Number.isFinite(step) && val_loss !== undefined && Number.isFinite(val_loss) ? [{ step, loss: val_loss }] : []);
  const open = `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`;
  const background = `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`;
  const title = `<text x="${WIDTH / 2}" y="26" text-anchor="middle" font-size="16" font-weight="bold">Loss per step</text>`;
  if (train.length === 0 && val.length === 0) {
    return [open, background, title, `<text x="${WIDTH / 2}" y="${HEIGHT / 2}" text-anchor="middle">no steps recorded</text>`, '</svg>', ''].join('\n');
  }

  const steps = [...train, ...val].map((r) => r.step);
  const losses = [...train, ...val].map((r) => r.loss);
  const xAxis = niceAxis(Math.min(...steps), Math.max(...steps), 8, true);
  const yAxis = niceAxis(Math.min(...losses), Math.max(...losses), 6, false);
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (step: number) => MARGIN.left + ((step - xAxis.lo) / (xAxis.hi - xAxis.lo)) * plotW;
  const y = (loss: number) => MARGIN.top + (1 - (loss - yAxis.lo) / (yAxis.hi - yAxis.lo)) * plotH;
  const bottom = MARGIN.top + plotH;
  const right = MARGIN.left + plotW;

  const parts = [open, background, title];
  for (const t of yAxis.ticks) {
    parts.push(
      `<line x1="${MARGIN.left}" y1="${fmt(y(t))}" x2="${right}" y2="${fmt(y(t))}" stroke="#e5e5e5"/>`,
      `<text x="${MARGIN.left - 8}" y="${fmt(y(t) + 4)}" text-anchor="end">${t.toFixed(yAxis.decimals)}</text>`,
    );
  }
  for (const t of xAxis.ticks) {
    parts.push(
      `<line x1="${fmt(x(t))}" y1="${bottom}" x2="${fmt(x(t))}" y2="${bottom + 5}" stroke="black"/>`,
      `<text x="${fmt(x(t))}" y="${bottom + 18}" text-anchor="middle">${t.toFixed(xAxis.decimals)}</text>`,
    );
  }
  parts.push(
    `<path d="M${MARGIN.left},${MARGIN.top} V${bottom} H${right}" fill="none" stroke="black"/>`,
    `<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 12}" text-anchor="middle">step</text>`,
    `<text transform="translate(18 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">loss</text>`,
  );

  const legend: [string, string, boolean][] = [];
  if (train.length > 0) {
    const points = train.map((r): [number, number] => [x(r.step), y(r.loss)]);
    parts.push(`<path class="train-loss" d="${pathOf(points)}" fill="none" stroke="${TRAIN_COLOR}" stroke-width="1.5"/>`);
    // A path through one point draws nothing: mark it.
    if (points.length === 1) parts.push(`<circle cx="${fmt(points[0][0])}" cy="${fmt(points[0][1])}" r="3" fill="${TRAIN_COLOR}"/>`);
    legend.push(['train loss', TRAIN_COLOR, false]);
  }
  if (val.length > 0) {
    const points = val.map((r): [number, number] => [x(r.step), y(r.loss)]);
    parts.push(`<path class="val-loss" d="${pathOf(points)}" fill="none" stroke="${VAL_COLOR}" stroke-width="1.5" stroke-dasharray="5 4"/>`);
    for (const [px, py] of points) parts.push(`<circle cx="${fmt(px)}" cy="${fmt(py)}" r="3.5" fill="${VAL_COLOR}"/>`);
    legend.push(['validation loss', VAL_COLOR, true]);
  }

  const legendX = right - 150;
  parts.push(`<rect x="${legendX - 10}" y="${MARGIN.top + 6}" width="146" height="${legend.length * 20 + 8}" fill="white" stroke="#999"/>`);
  legend.forEach(([label, color, dots], i) => {
    const ly = MARGIN.top + 20 + i * 20;
    parts.push(`<line x1="${legendX}" y1="${ly}" x2="${legendX + 24}" y2="${ly}" stroke="${color}" stroke-width="1.5"${dots ? ' stroke-dasharray="5 4"' : ''}/>`);
    if (dots) parts.push(`<circle cx="${legendX + 12}" cy="${ly}" r="3.5" fill="${color}"/>`);
    parts.push(`<text x="${legendX + 32}" y="${ly + 4}">${label}</text>`);
  });
  parts.push('</svg>', '');
  return parts.join('\n');
}
