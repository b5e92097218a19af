// Reconnect delay schedule: exponential growth, a cap, jitter and a maximum number of attempts.
// Pure: the random source is injected, nothing here touches timers or the DOM.

export const BACKOFF_DEFAULTS = Object.freeze({
  base: 500, // ms before the first retry (before jitter)
  factor: 2,
  cap: 15000, // no delay grows past this
  maxAttempts: 10,
  // "equal": ceiling/2 + random * ceiling/2 (never hammers the server with 0 ms retries);
  // "full": random * ceiling; "none": the ceiling itself.
  jitter: "equal",
});

/** The un-jittered delay for a 1-based attempt: min(cap, base * factor^(attempt-1)). */
export function ceilingFor(attempt, options = {}) {
  const { base, factor, cap } = { ...BACKOFF_DEFAULTS, ...options };
  if (!Number.isInteger(attempt) || attempt < 1) throw new RangeError("attempt must be an integer >= 1");
  // Compute in a way that cannot overflow to Infinity for large attempts.
  let value = base;
  for (let i = 1; i < attempt && value < cap; i += 1) value *= factor;
  return Math.min(cap, value);
}

/** [min, max] bounds of the delay for an attempt under the configured jitter. */
export function boundsFor(attempt, options = {}) {
  const opts = { ...BACKOFF_DEFAULTS, ...options };
  const ceiling = ceilingFor(attempt, opts);
  if (opts.jitter === "full") return [0, ceiling];
  if (opts.jitter === "equal") return [ceiling / 2, ceiling];
  return [ceiling, ceiling];
}

/**
 * Delay in ms before the given 1-based attempt, or null once attempt > maxAttempts
 * (the caller then gives up and offers a manual retry).
 */
export function delayFor(attempt, options = {}, random = Math.random) {
  const opts = { ...BACKOFF_DEFAULTS, ...options };
  if (attempt > opts.maxAttempts) return null;
  const ceiling = ceilingFor(attempt, opts);
  const r = Math.min(Math.max(Number(random()) || 0, 0), 1);
  let delay;
  if (opts.jitter === "full") delay = r * ceiling;
  else if (opts.jitter === "equal") delay = ceiling / 2 + (r * ceiling) / 2;
  else delay = ceiling;
  return Math.round(delay);
}

/** A small stateful wrapper: next() returns the next delay (or null when exhausted). */
export function createBackoff(options = {}, random = Math.random) {
  const opts = { ...BACKOFF_DEFAULTS, ...options };
  let attempt = 0;
  return {
    get attempt() {
      return attempt;
    },
    get maxAttempts() {
      return opts.maxAttempts;
    },
    get exhausted() {
      return attempt >= opts.maxAttempts;
    },
    next() {
      if (attempt >= opts.maxAttempts) return null;
      attempt += 1;
      return delayFor(attempt, opts, random);
    },
    reset() {
      attempt = 0;
    },
  };
}
