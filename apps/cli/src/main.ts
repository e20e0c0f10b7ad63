#!/usr/bin/env node
/** Entry point of the `parley` binary. */
import { run } from './cli.js';
import { flushStdio } from './io.js';

const code = await run(process.argv);
await flushStdio();
// Exit explicitly: an SDK or relay handle left open must not keep a finished
// command alive.
process.exit(code);
