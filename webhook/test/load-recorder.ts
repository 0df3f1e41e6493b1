/** `node --import <this>`: records every module the process resolves into $BPG_LOAD_RECORD (see load-hooks.ts). */
import { register } from 'node:module';

const file = process.env.BPG_LOAD_RECORD;
if (!file) throw new Error('load-recorder: set BPG_LOAD_RECORD to the file to write');
register('./load-hooks.js', import.meta.url, { data: { file } });
