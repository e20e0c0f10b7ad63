export * from './errors.js';
export * from './limits.js';
export * from './ids.js';
export * from './json.js';
export * from './api.js';
export * from './messages.js';
export * from './frames.js';
export * from './content.js';
