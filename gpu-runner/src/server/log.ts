/** Structured logs: one JSON object per line on stdout, with the edge's request id when there is one. */
const levels = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type Level = keyof typeof levels;

export interface Logger {
  log(level: Level, message: string, fields?: Record<string, unknown>): void;
}

export function createLogger(
  minimum: Level,
  write: (line: string) => void = (l) => process.stdout.write(l),
): Logger {
  return {
    log(level, message, fields = {}) {
      if (levels[level] < levels[minimum]) return;
      write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
    },
  };
}
