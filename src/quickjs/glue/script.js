export default (original, taken, current) => {
  // Built-ins taken at install: a program that replaces them later must not break its stacks.
  const { apply, lastIndexOf, slice, split, freeze, defineProperty } = taken;
  const { WeakMap, weakGet, weakSet } = taken;
  // `[file, line, col]` of a position, or undefined. Arrays here are made by `split` and
  // literals, or filled by `defineProperty`, never by assignment: a program's indexed setter
  // on a prototype would intercept that.
  const located = (file, line, col) => {
    const at = original(file, line, col);
    return at === undefined ? undefined : apply(split, at, ["\n"]);
  };
  const { stackGet, slotGet, slotSet, Error } = taken;
  // Each error's stack as the engine has it, and as mapped: the error itself gets no
  // property (the engine keeps its stack out of sight, and a program's own getter on
  // `Error.prototype.stack` must still be reached at every read).
  const mappedOf = WeakMap === undefined ? undefined : new WeakMap();
  // What `Error.prepareStackTrace` holds now (a host's function is wrapped by the caller).
  let host = current;
  // "    at name (file:line:col)" or "    at file:line:col", mapped where it can be.
  const frame = (line) => {
    if (apply(slice, line, [0, 7]) !== "    at ") return line;
    const open = apply(lastIndexOf, line, [" ("]);
    const inParens = open > 0 && apply(slice, line, [-1]) === ")";
    const place = inParens ? apply(slice, line, [open + 2, -1]) : apply(slice, line, [7]);
    const c = apply(lastIndexOf, place, [":"]);
    const l = c > 0 ? apply(lastIndexOf, place, [":", c - 1]) : -1;
    if (l <= 0) return line;
    const at = located(apply(slice, place, [0, l]), +apply(slice, place, [l + 1, c]), +apply(slice, place, [c + 1]));
    if (at === undefined) return line;
    const where = `${at[0]}:${at[1]}:${at[2]}`;
    return inParens ? `${apply(slice, line, [0, open])} (${where})` : `    at ${where}`;
  };
  const mapStack = (text) => {
    const lines = apply(split, text, ["\n"]);
    let out = "";
    for (let i = 0; i < lines.length; i++) out += (i > 0 ? "\n" : "") + frame(lines[i]);
    return out;
  };
  // The getter of `Error.prototype.stack`: the engine's text, mapped once per error.
  function getStack() {
    const text = apply(stackGet, this, []);
    if (typeof text !== "string") return text;
    // Mapped once stays mapped, even after a host set its own `Error.prepareStackTrace`.
    const seen = mappedOf === undefined ? undefined : apply(weakGet, mappedOf, [this]);
    if (seen !== undefined && seen[0] === text) return seen[1];
    if (typeof host === "function") return text;
    let mapped = text;
    try {
      mapped = mapStack(text);
      if (mappedOf !== undefined) apply(weakSet, mappedOf, [this, [text, mapped]]);
    } catch {}
    return mapped;
  }
  const site = (s) => {
    const file = s.getFileName(), line = s.getLineNumber(), col = s.getColumnNumber();
    if (typeof file !== "string" || typeof line !== "number" || typeof col !== "number") return s;
    const at = located(file, line, col);
    if (at === undefined) return s;
    return {
      getFileName: () => at[0],
      getLineNumber: () => +at[1],
      getColumnNumber: () => +at[2],
      getFunctionName: () => s.getFunctionName(),
      getFunction: () => s.getFunction(),
      isNative: () => s.isNative(),
      isConstructor: () => s.isConstructor(),
      toString: () => `${s.getFunctionName() ?? "<anonymous>"} (${at[0]}:${at[1]}:${at[2]})`,
    };
  };
  const wrap = (fn) => (error, sites) => {
    let list;
    try {
      list = [];
      for (let i = 0; i < sites.length; i++) {
        const value = site(sites[i]);
        const field = { __proto__: null, value, writable: true, enumerable: true, configurable: true };
        apply(defineProperty, undefined, [list, i, field]);
      }
    } catch {
      list = sites;
    }
    return apply(fn, Error, [error, list]);
  };
  // The engine's slot first: if that throws, nothing changed.
  const setHost = (value) => {
    apply(slotSet, Error, [typeof value === "function" ? wrap(value) : value]);
    host = value;
  };
  return freeze({ getStack, getHost: () => host, setHost });
}
