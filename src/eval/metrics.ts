/**
 * Scores of a generated response against its reference, on normalised words (lower case,
 * punctuation dropped, whitespace collapsed: SQuAD's normalisation less its article removal):
 * exact match, token F1 (bag-of-words overlap) and ROUGE-L (F1 of the longest common subsequence).
 */

/** The words of a text, lower-cased, without punctuation. */
export function words(text: string): string[] {
  return text.toLowerCase().replace(/[^\p{L}\p{N}\s]/gu, ' ').split(/\s+/).filter((w) => w !== '');
}

export function exactMatch(response: string, reference: string): number {
  return words(response).join(' ') === words(reference).join(' ') ? 1 : 0;
}

const f1 = (overlap: number, predicted: number, reference: number) => (overlap === 0 ? 0 : (2 * overlap) / (predicted + reference));

/** F1 of the words in common, each counted as often as it occurs in both. */
export function tokenF1(response: string, reference: string): number {
  const predicted = words(response);
  const expected = words(reference);
  if (predicted.length === 0 && expected.length === 0) return 1;
  const counts = new Map<string, number>();
  for (const w of expected) counts.set(w, (counts.get(w) ?? 0) + 1);
  let overlap = 0;
  for (const w of predicted) {
    const left = counts.get(w) ?? 0;
    if (left > 0) {
      overlap++;
      counts.set(w, left - 1);
    }
  }
  return f1(overlap, predicted.length, expected.length);
}

/** ROUGE-L: F1 of the longest common subsequence of words (β = 1). */
export function rougeL(response: string, reference: string): number {
  const a = words(response);
  const b = words(reference);
  if (a.length === 0 && b.length === 0) return 1;
  let previous = new Array<number>(b.length + 1).fill(0);
  for (const wa of a) {
    const row = new Array<number>(b.length + 1).fill(0);
    for (let j = 0; j < b.length; j++) row[j + 1] = wa === b[j] ? previous[j] + 1 : Math.max(previous[j + 1], row[j]);
    previous = row;
  }
  return f1(previous[b.length], a.length, b.length);
}
