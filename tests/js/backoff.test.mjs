import test from "node:test";
import assert from "node:assert/strict";
import { BACKOFF_DEFAULTS, boundsFor, ceilingFor, createBackoff, delayFor } from "../../static/js/backoff.js";

test("defaults match the spec: base 500 ms, factor 2, cap 15 s, 10 attempts", () => {
  assert.equal(BACKOFF_DEFAULTS.base, 500);
  assert.equal(BACKOFF_DEFAULTS.factor, 2);
  assert.equal(BACKOFF_DEFAULTS.cap, 15000);
  assert.equal(BACKOFF_DEFAULTS.maxAttempts, 10);
});

test("ceiling grows exponentially and stops at the cap", () => {
  const ceilings = Array.from({ length: 10 }, (_, i) => ceilingFor(i + 1));
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000, 15000]);
  assert.equal(ceilingFor(1000), 15000, "no overflow for huge attempts");
  assert.throws(() => ceilingFor(0), RangeError);
});

test("no jitter gives exactly the ceiling", () => {
  for (let a = 1; a <= 10; a += 1) assert.equal(delayFor(a, { jitter: "none" }), ceilingFor(a));
});

test("equal jitter stays within [ceiling/2, ceiling]", () => {
  for (let a = 1; a <= 10; a += 1) {
    const [lo, hi] = boundsFor(a, { jitter: "equal" });
    assert.equal(lo, ceilingFor(a) / 2);
    assert.equal(hi, ceilingFor(a));
    assert.equal(delayFor(a, { jitter: "equal" }, () => 0), Math.round(lo));
    assert.equal(delayFor(a, { jitter: "equal" }, () => 1), Math.round(hi));
    for (let i = 0; i < 50; i += 1) {
      const d = delayFor(a, { jitter: "equal" });
      assert.ok(d >= Math.floor(lo) && d <= hi, `attempt ${a}: ${d} not in [${lo}, ${hi}]`);
    }
  }
});

test("full jitter stays within [0, ceiling]", () => {
  for (let a = 1; a <= 10; a += 1) {
    assert.equal(delayFor(a, { jitter: "full" }, () => 0), 0);
    assert.equal(delayFor(a, { jitter: "full" }, () => 1), ceilingFor(a));
    assert.equal(delayFor(a, { jitter: "full" }, () => 0.5), Math.round(ceilingFor(a) / 2));
  }
});

test("a broken random source cannot push the delay out of bounds", () => {
  assert.equal(delayFor(3, { jitter: "full" }, () => 7), 2000);
  assert.equal(delayFor(3, { jitter: "full" }, () => -1), 0);
  assert.equal(delayFor(3, { jitter: "full" }, () => NaN), 0);
});

test("after maxAttempts there is no delay: the caller gives up", () => {
  assert.notEqual(delayFor(10, {}, () => 0.5), null);
  assert.equal(delayFor(11), null);
  assert.equal(delayFor(4, { maxAttempts: 3 }), null);
});

test("createBackoff counts attempts, is exhausted after max, and resets", () => {
  const b = createBackoff({ maxAttempts: 3, jitter: "none" });
  assert.deepEqual([b.next(), b.next(), b.next()], [500, 1000, 2000]);
  assert.equal(b.exhausted, true);
  assert.equal(b.next(), null);
  assert.equal(b.attempt, 3);
  b.reset();
  assert.equal(b.attempt, 0);
  assert.equal(b.next(), 500);
});

test("custom base, factor and cap", () => {
  const opts = { base: 100, factor: 3, cap: 1000, jitter: "none" };
  assert.deepEqual([1, 2, 3, 4, 5].map((a) => delayFor(a, opts)), [100, 300, 900, 1000, 1000]);
});
