//! Just enough BTF to read libbpf's BTF-defined maps: the `.maps` data section's variables,
//! each a struct of `__uint(type, ..)`, `__uint(max_entries, ..)`, `__type(key, ..)`,
//! `__type(value, ..)` (or `key_size`/`value_size`) members.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A map as its BTF definition declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// The variable name (`calls` of `struct {...} calls SEC(".maps")`).
    pub name: String,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key size in bytes (0 when the map has no key, e.g. a ring buffer).
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// `max_entries` (the byte size, for a ring buffer).
    pub max_entries: u32,
}

/// One type record: kind, vlen, name offset, size-or-type, and where its extra data starts.
#[derive(Clone, Copy)]
struct Type {
    kind: u32,
    vlen: u32,
    name: u32,
    size_or_type: u32,
    extra: usize,
}

/// A parsed `.BTF` section.
pub struct Btf<'a> {
    types: Vec<Type>,
    data: &'a [u8],
    strings: &'a [u8],
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| "truncated .BTF".to_string())
}

impl<'a> Btf<'a> {
    /// Parses the section's header and type table.
    pub fn parse(section: &'a [u8]) -> Result<Btf<'a>, String> {
        let magic = section
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or("truncated .BTF")?;
        if magic != MAGIC {
            return Err("bad .BTF magic (not little-endian BTF)".to_string());
        }
        let hdr_len = u32_at(section, 4)? as usize;
        let range = |off: usize, len: usize| -> Result<&'a [u8], String> {
            let start = hdr_len.checked_add(off).ok_or("bad .BTF header")?;
            let end = start.checked_add(len).ok_or("bad .BTF header")?;
            section
                .get(start..end)
                .ok_or_else(|| "truncated .BTF".to_string())
        };
        let data = range(u32_at(section, 8)? as usize, u32_at(section, 12)? as usize)?;
        let strings = range(u32_at(section, 16)? as usize, u32_at(section, 20)? as usize)?;
        // Type id 0 is `void`.
        let mut types = alloc::vec![Type {
            kind: 0,
            vlen: 0,
            name: 0,
            size_or_type: 0,
            extra: 0,
        }];
        let mut at = 0;
        while at < data.len() {
            let name = u32_at(data, at)?;
            let info = u32_at(data, at + 4)?;
            let size_or_type = u32_at(data, at + 8)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            let extra = at + 12;
            let extra_len = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                other => return Err(alloc::format!("unknown BTF kind {other}")),
            };
            types.push(Type {
                kind,
                vlen,
                name,
                size_or_type,
                extra,
            });
            at = extra + extra_len;
        }
        Ok(Btf {
            types,
            data,
            strings,
        })
    }

    fn get(&self, id: u32) -> Result<Type, String> {
        self.types
            .get(id as usize)
            .copied()
            .ok_or_else(|| alloc::format!("BTF type {id} does not exist"))
    }

    fn name(&self, off: u32) -> &'a str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        core::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn word(&self, t: &Type, i: usize) -> Result<u32, String> {
        u32_at(self.data, t.extra + 4 * i)
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Result<Type, String> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(t),
            }
        }
        Err("BTF type chain too long".to_string())
    }

    /// The size in bytes of type `id`.
    fn size_of(&self, id: u32) -> Result<u32, String> {
        let t = self.resolve(id)?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Ok(t.size_or_type)
            }
            KIND_PTR => Ok(8),
            KIND_ARRAY => {
                let elem = self.size_of(self.word(&t, 0)?)?;
                elem.checked_mul(self.word(&t, 2)?)
                    .ok_or_else(|| "BTF array too large".to_string())
            }
            _ => Err(alloc::format!("BTF type {id} has no size")),
        }
    }

    /// The number `N` of an `__uint(field, N)` member: a pointer to an array of N ints.
    fn uint_member(&self, ty: u32) -> Result<u32, String> {
        let ptr = self.resolve(ty)?;
        if ptr.kind != KIND_PTR {
            return Err("an __uint() map field is not a pointer to an array".to_string());
        }
        let array = self.resolve(ptr.size_or_type)?;
        if array.kind != KIND_ARRAY {
            return Err("an __uint() map field is not a pointer to an array".to_string());
        }
        self.word(&array, 2)
    }

    /// The size of the type of a `__type(field, T)` member: a pointer to T.
    fn type_member(&self, ty: u32) -> Result<u32, String> {
        let ptr = self.resolve(ty)?;
        if ptr.kind != KIND_PTR {
            return Err("a __type() map field is not a pointer".to_string());
        }
        self.size_of(ptr.size_or_type)
    }

    /// The maps of the `.maps` data section, in section order.
    pub fn maps(&self) -> Result<Vec<(MapDef, u32)>, String> {
        let mut maps = Vec::new();
        let Some(sec) = self
            .types
            .iter()
            .find(|t| t.kind == KIND_DATASEC && self.name(t.name) == ".maps")
        else {
            return Ok(maps);
        };
        for v in 0..sec.vlen as usize {
            let var_id = self.word(sec, 3 * v)?;
            let offset = self.word(sec, 3 * v + 1)?;
            let var = self.get(var_id)?;
            if var.kind != KIND_VAR {
                return Err("a .maps entry is not a variable".to_string());
            }
            let name = self.name(var.name).to_string();
            let def = self.resolve(var.size_or_type)?;
            if def.kind != KIND_STRUCT {
                return Err(alloc::format!("map {name}: its definition is not a struct"));
            }
            let mut map = MapDef {
                name: name.clone(),
                map_type: 0,
                key_size: 0,
                value_size: 0,
                max_entries: 0,
            };
            for m in 0..def.vlen as usize {
                let member = self.name(self.word(&def, 3 * m)?);
                let ty = self.word(&def, 3 * m + 1)?;
                let field =
                    |r: Result<u32, String>| r.map_err(|e| alloc::format!("map {name}: {e}"));
                match member {
                    "type" => map.map_type = field(self.uint_member(ty))?,
                    "max_entries" => map.max_entries = field(self.uint_member(ty))?,
                    "key_size" => map.key_size = field(self.uint_member(ty))?,
                    "value_size" => map.value_size = field(self.uint_member(ty))?,
                    "key" => map.key_size = field(self.type_member(ty))?,
                    "value" => map.value_size = field(self.type_member(ty))?,
                    other => return Err(alloc::format!("map {name}: unsupported field '{other}'")),
                }
            }
            maps.push((map, offset));
        }
        Ok(maps)
    }
}
