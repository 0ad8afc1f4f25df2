/** The loss-curve SVG, read loosely: its parts are there and every coordinate is finite and on the canvas. */
import { describe, expect, it } from 'vitest';
import { lossCurveSvg, type LossRecord } from '../src/train/loss-plot.js';

/** Every number in a coordinate attribute or a path, with the canvas size from the root element. */
function coordinates(svg: string): { width: number; height: number; values: number[] } {
  const [, width, height] = /<svg[^>]*width="(\d+)" height="(\d+)"/.exec(svg)!.map(Number);
  const values: number[] = [];
  for (const [, value] of svg.matchAll(/\b(?:x|y|x1|x2|y1|y2|cx|cy)="([^"]*)"/g)) values.push(Number(value));
  for (const [, d] of svg.matchAll(/\bd="([^"]*)"/g)) {
    for (const token of d.split(/[\sMLVH,]+/).filter(Boolean)) values.push(Number(token));
  }
  return { width, height, values };
}

/** How many points the path of a series goes through. */
function pathPoints(svg: string, series: string): number {
  return new RegExp(`class="${series}" d="([^"]*)"`).exec(svg)![1].split(/[ML]/).filter(Boolean).length;
}

function expectDrawable(svg: string): void {
  expect(svg.startsWith('<svg')).toBe(true);
  expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
  expect(svg).not.toMatch(/NaN|Infinity|undefined/);
  const { width, height, values } = coordinates(svg);
  expect(values.length).toBeGreaterThan(0);
  for (const v of values) {
    expect(Number.isFinite(v)).toBe(true);
    expect(v).toBeGreaterThanOrEqual(0);
    expect(v).toBeLessThanOrEqual(Math.max(width, height));
  }
}

const run: LossRecord[] = Array.from({ length: 60 }, (_, i) => ({
  step: i + 1,
  loss: 1 + 9 * Math.exp(-i / 10),
  ...((i + 1) % 20 === 0 ? { val_loss: 1.3 + 9 * Math.exp(-i / 12) } : {}),
}));

describe('lossCurveSvg', () => {
  it('draws the train loss as a line, validation as points on a line, with axes, a legend and a title', () => {
    const svg = lossCurveSvg(run);
    expectDrawable(svg);
    expect(pathPoints(svg, 'train-loss')).toBe(60);
    expect(pathPoints(svg, 'val-loss')).toBe(3);
    expect(svg.match(/<circle/g)!.length).toBe(3 + 1); // three validation points, one in the legend
    expect(svg).toContain('>step</text>');
    expect(svg).toContain('>loss</text>');
    expect(svg).toContain('>train loss</text>');
    expect(svg).toContain('>validation loss</text>');
    expect(svg).toContain('>Loss per step</text>');
  });

  it('puts a lower loss lower on the canvas', () => {
    const svg = lossCurveSvg([{ step: 1, loss: 5 }, { step: 2, loss: 1 }]);
    const [first, second] = /class="train-loss" d="M([^"]*)"/.exec(svg)![1].split(' L').map((point) => point.split(',').map(Number));
    expect(second[0]).toBeGreaterThan(first[0]);
    expect(second[1]).toBeGreaterThan(first[1]);
  });

  it('leaves out the validation series when nothing was validated', () => {
    const svg = lossCurveSvg(run.map(({ step, loss }) => ({ step, loss })));
    expectDrawable(svg);
    expect(svg).toContain('class="train-loss"');
    expect(svg).not.toContain('class="val-loss"');
    expect(svg).not.toContain('validation loss');
  });

  it('draws a single record as a visible point', () => {
    const svg = lossCurveSvg([{ step: 1, loss: 10.9, val_loss: 10.8 }]);
    expectDrawable(svg);
    expect(svg).toContain('class="train-loss"');
    expect(svg).toContain('class="val-loss"');
    expect(svg.match(/<circle/g)!.length).toBe(1 + 1 + 1); // train point, validation point, legend
  });

  it('draws an empty run as an empty chart and skips non-finite losses', () => {
    expectDrawable(lossCurveSvg([]));
    expect(lossCurveSvg([])).toContain('no steps recorded');
    const svg = lossCurveSvg([{ step: 1, loss: Number.NaN }, { step: 2, loss: 3 }, { step: 3, loss: 2 }]);
    expectDrawable(svg);
  });
});
