/** Programmatic entry points of the CLI (used by tests and embedders). */
export { run, createProgram, cliVersion } from './cli.js';
export { ExitCode, CliError, describeSdkError, reportError } from './errors.js';
export { formatSafetyNumber, safeText, shortTime } from './format.js';
