/**
 * A failure the user can act on: main prints its message as the step's one error line, with no
 * stack trace. Anything else that escapes is a bug and is printed the same way (stack in debug).
 */
export class ActionError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ActionError';
  }
}
