import type { ChildProcess } from 'node:child_process';

export type Mode = 'replay' | 'record' | 'record-missing' | 'passthrough';

export interface StartOptions {
  /** Default: replay. */
  mode?: Mode;
  /** ouli's config file; default: ouli's own lookup in the current folder. */
  config?: string;
  /** Recording dir; default: ouli's (`recordings`). */
  recordingDir?: string;
  /** More command-line arguments, as they are (`--unused-report FILE`). */
  args?: string[];
  /** Added to the environment of ouli. */
  env?: Record<string, string>;
  /** The binary to run instead of the platform package's (or OULI_BIN). */
  binary?: string;
}

export interface Endpoint {
  index: number;
  addr: string;
  mode: string;
  tls: boolean;
  caFile: string | null;
  url: string;
}

export interface Miss {
  error: string;
  fault: string;
  message: string;
  session: string;
  method?: string;
  target?: string;
  differences?: Array<{ field: string; expected: string | null; got: string | null }> | string;
  record_command?: string;
  [key: string]: unknown;
}

export interface Ouli {
  /** Base URL of endpoint 0 (`http://127.0.0.1:PORT`). */
  url: string;
  /** Base URL of each endpoint, by index. */
  urls: string[];
  /** The generated CA certificate (PEM) of TLS endpoints, else null. */
  caFile: string | null;
  mode: Mode;
  endpoints: Endpoint[];
  process: ChildProcess;
  log(): string;
  control(method: string, path: string, body?: unknown): Promise<any>;
  misses(session?: string): Promise<Miss[]>;
  setSession(name: string | null): Promise<any>;
  sessions(): Promise<any[]>;
  /** SIGTERM; the exit code once the recordings are closed. */
  stop(): Promise<number | null>;
}

export const MODES: Mode[];
export function startOuli(options?: StartOptions): Promise<Ouli>;
export function binaryPath(): string;
export function platformPackage(): string;
export function parseReadyLine(line: string): Endpoint | null;
