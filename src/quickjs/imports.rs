//! Loading or compiling a module in a large graph: QuickJS resolves each import of a module it
//! reads from bytecode twice (once while reading the module, as `JS_ReadObject` loads what it
//! imports, and again when the graph is linked), against once for a module it compiles, and
//! each resolution walks the context's list of loaded modules. In a graph of thousands of
//! modules that second walk costs more than compiling the module's source again, so
//! [`PackLoader`](super::PackLoader) compiles such a module instead of loading its bytecode
//! (BENCHMARKS.md, *Graphs of thousands of modules*, has the counts and the times).

/// The engine's bytecode format version this reading follows (`BC_VERSION` in the QuickJS
/// rquickjs builds); bytecode of another version is not read, and its module is loaded.
const BYTECODE_VERSION: u8 = 28;

/// `BC_TAG_MODULE`: the tag of the module a module's bytecode holds.
const MODULE_TAG: u8 = 13;

/// A visit of one module in the engine's walk of its module list, in nanoseconds: what a walk
/// over a 2,000-module graph's list cost per module visited, rounded down (a longer list misses
/// the cache more, so the estimate errs towards loading).
const VISIT_NS: u64 = 4;

/// What compiling a module costs more than loading its bytecode, in nanoseconds: a fixed part
/// and a part per byte of its bytecode; measured on small generated modules and on lodash-es,
/// rounded up (the estimate errs towards loading).
const COMPILE_FIXED_NS: u64 = 2_000;
const COMPILE_NS_PER_BYTECODE_BYTE: u64 = 40;

/// How many modules the module in `bytecode` (from this engine's `Module::write`) imports or
/// re-exports from: its requested modules, read from the bytecode's header. `None` where the
/// bytes do not read as this engine's module bytecode.
pub(crate) fn import_count(bytecode: &[u8]) -> Option<u32> {
    let mut at = Reader { bytes: bytecode };
    if at.byte()? != BYTECODE_VERSION {
        return None;
    }
    at.skip(4)?; // the engine's own checksum
    for _ in 0..at.leb128()? {
        let kind = at.byte()?;
        match (kind & 0x80 != 0, kind & 0x40 != 0) {
            // One of the engine's own atoms, by number (inline, or with more bits after).
            (true, false) => {}
            (true, true) => {
                at.leb128()?;
            }
            // A string: its length (in characters, doubled, plus one if they are 16-bit).
            (false, _) => {
                let len = at.leb128()?;
                at.skip(((len >> 1) as usize) << (len & 1))?;
            }
        }
    }
    if at.byte()? != MODULE_TAG {
        return None;
    }
    at.leb128()?; // the module's name
    at.leb128()
}

/// Whether compiling a module whose bytecode is `bytecode_len` bytes and imports `imports`
/// modules costs less than loading it, in a context that holds `loaded` modules: the second
/// resolution of each import walks at least past every module loaded before it, and past the
/// module's earlier imports.
pub(crate) fn compiling_costs_less(imports: u32, loaded: usize, bytecode_len: usize) -> bool {
    let imports = u64::from(imports);
    let visits = imports.saturating_mul((loaded as u64).saturating_add(imports / 2));
    let second_walk = visits.saturating_mul(VISIT_NS);
    let compile = COMPILE_FIXED_NS
        .saturating_add((bytecode_len as u64).saturating_mul(COMPILE_NS_PER_BYTECODE_BYTE));
    second_walk > compile
}

/// A cursor over bytecode, every read bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn skip(&mut self, len: usize) -> Option<()> {
        self.bytes = self.bytes.get(len..)?;
        Some(())
    }

    /// An unsigned LEB128 of at most 32 bits.
    fn leb128(&mut self) -> Option<u32> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = self.byte()?;
            value |= u32::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name an empty module (compiling a module loads what it imports).
    struct Empty;

    impl rquickjs::loader::Resolver for Empty {
        fn resolve<'js>(
            &mut self,
            _: &rquickjs::Ctx<'js>,
            _: &str,
            name: &str,
            _: Option<rquickjs::loader::ImportAttributes<'js>>,
        ) -> rquickjs::Result<String> {
            Ok(name.to_owned())
        }
    }

    impl rquickjs::loader::Loader for Empty {
        fn load<'js>(
            &mut self,
            ctx: &rquickjs::Ctx<'js>,
            name: &str,
            _: Option<rquickjs::loader::ImportAttributes<'js>>,
        ) -> rquickjs::Result<rquickjs::Module<'js, rquickjs::module::Declared>> {
            rquickjs::Module::declare(ctx.clone(), name, "export {};")
        }
    }

    /// The bytecode the engine writes for module `source` (what it imports, empty).
    fn bytecode_of(source: &str) -> Vec<u8> {
        let runtime = rquickjs::Runtime::new().unwrap();
        runtime.set_loader(Empty, Empty);
        let context = rquickjs::Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let options = super::super::CompileOptions::default();
            let (_, bytecode) =
                super::super::compile(&ctx, "m.js", source.as_bytes(), options).unwrap();
            bytecode.into_bytes()
        })
    }

    /// Counts read from the bytecode of modules the engine compiled.
    #[test]
    fn a_modules_imports_are_counted_from_its_bytecode() {
        // Names outside Latin-1 are atoms of 16-bit characters.
        let wide = "export const 名前 = 1, ünï = 2;\n";
        let cases = [
            ("export const a = 1;\n".to_owned(), 0),
            (format!("{wide}import {{ x }} from './x.js';\n"), 1),
            (
                "import './a.js';\nimport { b } from './b.js';\nexport * from './c.js';\n\
                 export { d } from './d.js';\nimport { b as b2 } from './b.js';\n"
                    .to_owned(),
                4,
            ),
            (
                (0..300)
                    .map(|i| format!("export {{ f{i} }} from './m{i}.js';\n"))
                    .collect(),
                300,
            ),
        ];
        for (source, imports) in cases {
            let bytes = bytecode_of(&source);
            assert_eq!(import_count(&bytes), Some(imports), "{source}");
            assert_eq!(import_count(&bytes[..bytes.len().min(12)]), None);
        }
        assert_eq!(import_count(b""), None);
        assert_eq!(import_count(&[BYTECODE_VERSION + 1, 0, 0, 0, 0, 0]), None);
    }

    /// Any bytes, damaged bytecode included, give a count or `None`, never a panic or a hang.
    #[test]
    fn any_bytes_read_as_a_count_or_none() {
        let bytecode = bytecode_of("import { a } from './a.js';\nexport const 名 = a;\n");
        // A small xorshift, seeded: the same cases every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2_000 {
            let mut damaged = bytecode.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % damaged.len() as u64) as usize;
                damaged[at] = next() as u8;
            }
            damaged.truncate(1 + (next() % damaged.len() as u64) as usize);
            let _ = import_count(&damaged);
            let random: Vec<u8> = (0..next() % 64).map(|_| next() as u8).collect();
            let _ = import_count(&random);
        }
        // Atom and string lengths claiming far more than there is end the read.
        let mut claims = vec![BYTECODE_VERSION, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        claims.extend([0x01, 0xff, 0xff, 0xff, 0xff, 0x07]);
        assert_eq!(import_count(&claims), None);
    }

    #[test]
    fn compiling_pays_only_for_imports_deep_in_a_large_graph() {
        // A leaf never: it has nothing to resolve twice.
        assert!(!compiling_costs_less(0, 1_000_000, 10));
        // A module of a binary tree: once the context holds a few thousand modules.
        assert!(!compiling_costs_less(2, 500, 300));
        assert!(compiling_costs_less(2, 5_000, 300));
        // One module importing 10,000: even as the first.
        assert!(compiling_costs_less(10_000, 0, 400_000));
        // An application's entry importing 300 modules of its own, bytecode of 15 KB: no.
        assert!(!compiling_costs_less(300, 0, 15_000));
        // Saturates rather than overflows.
        assert!(compiling_costs_less(u32::MAX, usize::MAX, 0));
    }
}
