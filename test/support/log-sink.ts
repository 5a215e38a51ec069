import { Writable } from 'node:stream';

/** Collects what a gateway writes to its log (LOG_FORMAT=json), for `logDestination`. */
export class LogSink extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
  lines(): Record<string, any>[] {
    return this.text.split('\n').filter(Boolean).map((line) => JSON.parse(line));
  }
}
