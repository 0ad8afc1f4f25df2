/** An instruction data file on disk (its format and checks: src/train/instruction-data.ts). */
import { readFileSync, statSync } from 'node:fs';
import { DataError, parseInstructionData, parseInstructionLines, type InstructionEntry } from '../train/instruction-data.js';

/** JSON.parse holds the text and the parsed entries at once: beyond this a data set is better split. */
const MAX_DATA_BYTES = 512 * 2 ** 20;

/**
 * The entries of a data file: a JSON array, or JSON Lines for a `.jsonl` file; every problem is a
 * DataError naming the file (and the entry or line, and the field).
 */
export function loadInstructionFile(path: string): InstructionEntry[] {
  let text: string;
  try {
    // Checked before reading: a FIFO or a device would be waited on, or read without end.
    const info = statSync(path);
    if (info.isDirectory()) throw new DataError(`${path}: is a folder, not a data file`);
    if (!info.isFile()) throw new DataError(`${path}: not a regular file`);
    if (info.size > MAX_DATA_BYTES) throw new DataError(`${path}: ${(info.size / 2 ** 20).toFixed(0)} MiB, more than the ${MAX_DATA_BYTES / 2 ** 20} MiB a data file may have`);
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (e instanceof DataError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(code === 'ENOENT' ? `${path}: no such file` : `${path}: cannot be read (${(e as Error).message})`);
  }
  return path.endsWith('.jsonl') ? parseInstructionLines(text, path) : parseInstructionData(text, path);
}
