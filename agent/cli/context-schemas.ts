/** The saved contexts' file, as zod schemas (loaded only when a file is read or written, or a URL or token checked). */
import { z } from 'zod';

export const ContextName = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/,
    'context names are letters, digits, dot, dash and underscore (at most 63)',
  );

/** An agent's base URL: http(s), no credentials in it (the token goes in its own field). */
export const AgentUrl = z.string().refine((v) => {
  try {
    const u = new URL(v);
    return (u.protocol === 'http:' || u.protocol === 'https:') && !u.username && !u.password;
  } catch {
    return false;
  }
}, 'the agent URL must look like https://agent.example.com:7432 (http or https, no user or password in it)');

/** A bearer token as `bpg serve` accepts them: one word. */
export const AgentToken = z
  .string()
  .min(1, 'the token is empty')
  .regex(/^\S+$/, 'the token must be one word without spaces');

export const SavedContext = z
  .object({
    name: ContextName,
    url: AgentUrl,
    token: AgentToken,
    /** Absolute path of a PEM file of the CA that signed the agent's certificate. */
    ca: z.string().optional(),
  })
  .strict();
export type SavedContext = z.infer<typeof SavedContext>;

export const ContextsFile = z
  .object({
    current: ContextName.nullable().optional(),
    contexts: z.array(SavedContext).default([]),
  })
  .strict();
export type ContextsFile = z.infer<typeof ContextsFile>;
