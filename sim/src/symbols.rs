//! The text symbols of an ELF image: address -> `symbol+offset` for traces, name -> address
//! for probe specs, and prefix expansion (`zoo_*`) for scenarios.
//!
//! Which symbols count (the QEMU test kernel must apply the same rule, since both print the
//! same traces): every `STT_FUNC` or `STT_NOTYPE` symbol with a non-empty name that does not
//! start with `$` (mapping symbols) or `.L` (local labels) and whose section is executable.
//! An address belongs to the nearest symbol at or below it (sizes are ignored, so labels
//! without a size work too). Among several symbols at one address the winner is, in order:
//! `STT_FUNC` before `STT_NOTYPE`, global before local or weak, then the smaller name.

use std::collections::HashMap;
use std::sync::Arc;

use goblin::elf::section_header::SHF_EXECINSTR;
use goblin::elf::sym::{STB_GLOBAL, STT_FUNC, STT_NOTYPE, STT_OBJECT};
use goblin::elf::Elf;

/// One text symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// The name.
    pub name: Arc<str>,
    /// Its address.
    pub addr: u64,
    /// `st_size` (0 for plain labels).
    pub size: u64,
    /// Whether it is an `STT_FUNC` symbol.
    pub is_func: bool,
    /// Whether it is a global symbol.
    pub is_global: bool,
}

impl Symbol {
    /// Lower ranks win ties at one address.
    fn rank(&self) -> u8 {
        u8::from(!self.is_func) * 2 + u8::from(!self.is_global)
    }
}

/// The text symbols of one image, sorted for lookups in both directions.
#[derive(Clone, Debug, Default)]
pub struct SymbolTable {
    /// Sorted by (address, rank, name).
    sorted: Vec<Symbol>,
    /// Name -> index into `sorted` of the best symbol of that name.
    by_name: HashMap<Arc<str>, usize>,
    /// Data objects (`STT_OBJECT`) in executable sections: name -> address. Not text
    /// symbols (traces never name them), kept so that a probe spec naming one is refused
    /// with a clear reason.
    objects: HashMap<Arc<str>, u64>,
}

/// Why a name does not resolve to a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFunction {
    /// No symbol has the name.
    Unknown,
    /// The name is a label or data, with this description, at this address.
    Other(&'static str, u64),
}

impl SymbolTable {
    /// Collects the text symbols of a parsed ELF file.
    pub fn from_elf(elf: &Elf<'_>) -> Self {
        let executable = |shndx: usize| {
            elf.section_headers
                .get(shndx)
                .is_some_and(|sh| sh.sh_flags & u64::from(SHF_EXECINSTR) != 0)
        };
        let symbols = elf.syms.iter().filter_map(|sym| {
            let kind = sym.st_type();
            if kind != STT_FUNC && kind != STT_NOTYPE || !executable(sym.st_shndx) {
                return None;
            }
            let name = elf.strtab.get_at(sym.st_name)?;
            if name.is_empty() || name.starts_with('$') || name.starts_with(".L") {
                return None;
            }
            Some(Symbol {
                name: Arc::from(name),
                addr: sym.st_value,
                size: sym.st_size,
                is_func: kind == STT_FUNC,
                is_global: sym.st_bind() == STB_GLOBAL,
            })
        });
        let mut table = Self::new(symbols.collect());
        table.objects = elf
            .syms
            .iter()
            .filter(|sym| sym.st_type() == STT_OBJECT && executable(sym.st_shndx))
            .filter_map(|sym| Some((Arc::from(elf.strtab.get_at(sym.st_name)?), sym.st_value)))
            .collect();
        table
    }

    /// Builds a table from a list of symbols in any order.
    pub fn new(mut symbols: Vec<Symbol>) -> Self {
        symbols.sort_by(|a, b| (a.addr, a.rank(), &a.name).cmp(&(b.addr, b.rank(), &b.name)));
        symbols.dedup_by(|a, b| a.addr == b.addr && a.name == b.name);
        let mut by_name: HashMap<Arc<str>, usize> = HashMap::with_capacity(symbols.len());
        for (i, sym) in symbols.iter().enumerate() {
            by_name
                .entry(sym.name.clone())
                .and_modify(|best| {
                    if sym.rank() < symbols[*best].rank() {
                        *best = i;
                    }
                })
                .or_insert(i);
        }
        SymbolTable {
            sorted: symbols,
            by_name,
            objects: HashMap::new(),
        }
    }

    /// Whether the table is empty (a stripped program).
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty() && self.objects.is_empty()
    }

    /// The address of the function (`STT_FUNC` symbol) called `name`; a label or a data
    /// object of that name is an error saying so.
    pub fn resolve_function(&self, name: &str) -> Result<u64, NotFunction> {
        if let Some(&i) = self.by_name.get(name) {
            let sym = &self.sorted[i];
            return if sym.is_func {
                Ok(sym.addr)
            } else {
                Err(NotFunction::Other("a label (STT_NOTYPE)", sym.addr))
            };
        }
        match self.objects.get(name) {
            Some(&addr) => Err(NotFunction::Other("a data object (STT_OBJECT)", addr)),
            None => Err(NotFunction::Unknown),
        }
    }

    /// The same symbols moved up by `base` (a position-independent image loaded there).
    pub fn relocated(self, base: u64) -> Self {
        if base == 0 {
            return self;
        }
        let moved = self
            .sorted
            .into_iter()
            .map(|s| Symbol {
                addr: s.addr.wrapping_add(base),
                ..s
            })
            .collect();
        Self::new(moved)
    }

    /// Every symbol, sorted by address (ties: the winner first).
    pub fn symbols(&self) -> &[Symbol] {
        &self.sorted
    }

    /// The symbol `addr` falls in and the offset into it.
    pub fn lookup(&self, addr: u64) -> Option<(&Arc<str>, u64)> {
        let after = self.sorted.partition_point(|s| s.addr <= addr);
        let at = self.sorted.get(after.checked_sub(1)?)?.addr;
        let first = self.sorted.partition_point(|s| s.addr < at);
        let sym = &self.sorted[first];
        Some((&sym.name, addr - sym.addr))
    }

    /// The address of the symbol called `name`.
    pub fn resolve(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).map(|&i| self.sorted[i].addr)
    }

    /// Every symbol whose name starts with `prefix`, in address order (then name order).
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Symbol> + 'a {
        let mut matching: Vec<&Symbol> = self
            .sorted
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .collect();
        matching.sort_by(|a, b| (a.addr, &a.name).cmp(&(b.addr, &b.name)));
        matching.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(name: &str, addr: u64, is_func: bool, is_global: bool) -> Symbol {
        Symbol {
            name: Arc::from(name),
            addr,
            size: 0,
            is_func,
            is_global,
        }
    }

    fn table() -> SymbolTable {
        SymbolTable::new(vec![
            sym("zoo_b", 0x208, false, true),
            sym("main", 0x100, true, true),
            sym("zoo", 0x200, true, true),
            sym("zoo_a", 0x200, false, true),
            sym("helper", 0x180, true, false),
            sym("_start", 0x80, false, true),
        ])
    }

    #[test]
    fn lookup_picks_the_nearest_symbol_and_breaks_ties() {
        let t = table();
        let at = |a| t.lookup(a).map(|(n, off)| (n.to_string(), off));
        assert_eq!(at(0x7f), None);
        assert_eq!(at(0x80), Some(("_start".into(), 0)));
        assert_eq!(at(0x108), Some(("main".into(), 8)));
        assert_eq!(at(0x180), Some(("helper".into(), 0)));
        assert_eq!(at(0x204), Some(("zoo".into(), 4)));
        assert_eq!(at(0x20a), Some(("zoo_b".into(), 2)));
        assert_eq!(at(0x9999), Some(("zoo_b".into(), 0x9999 - 0x208)));
    }

    #[test]
    fn resolve_and_prefix() {
        let t = table();
        assert_eq!(t.resolve("main"), Some(0x100));
        assert_eq!(t.resolve("zoo_a"), Some(0x200));
        assert_eq!(t.resolve("nope"), None);
        assert_eq!(t.resolve_function("main"), Ok(0x100));
        assert_eq!(
            t.resolve_function("zoo_a"),
            Err(NotFunction::Other("a label (STT_NOTYPE)", 0x200))
        );
        assert_eq!(t.resolve_function("nope"), Err(NotFunction::Unknown));
        let names: Vec<_> = t.with_prefix("zoo_").map(|s| s.name.to_string()).collect();
        assert_eq!(names, ["zoo_a", "zoo_b"]);
        let names: Vec<_> = t.with_prefix("zoo").map(|s| s.name.to_string()).collect();
        assert_eq!(names, ["zoo", "zoo_a", "zoo_b"]);
    }
}
