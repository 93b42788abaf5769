//! [`Array`], the core's growable array, and [`Text`], a string kept in one.
//!
//! They stand in for `Vec` and `String` to keep the kernel stack small in unoptimised
//! builds. A kernel's debug profile compiles the core at opt-level 0, and there the
//! standard collections' generic growth and clone code (`RawVec::grow_amortized`,
//! `finish_grow`, `Global::grow_impl`, `to_vec`, with their debug precondition checks),
//! monomorphised into this crate, needs about 1.9 KiB of stack under every call that may
//! allocate. Here every allocation goes through two small non-generic functions that call
//! the global allocator directly ([`resize`], [`release`]), and every generic function
//! keeps a few locals.

use core::alloc::Layout;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::{fmt, mem, ptr, slice};

/// A growable array of `T` on the heap, like `Vec<T>` but with a shallow stack in every
/// build. Dereferences to a slice for reading and iterating.
pub(crate) struct Array<T> {
    ptr: NonNull<T>,
    /// Elements the allocation holds (`usize::MAX` for zero-sized `T`: never allocated).
    cap: usize,
    len: usize,
}

// SAFETY: an `Array<T>` owns its elements as a `Vec<T>` does; sending or sharing it sends
// or shares them.
unsafe impl<T: Send> Send for Array<T> {}
// SAFETY: as above: `&Array<T>` only hands out `&T`.
unsafe impl<T: Sync> Sync for Array<T> {}

/// Reallocates the buffer at `ptr`, which holds `old` elements of layout `elem` (`old == 0`:
/// nothing allocated yet), to hold `new` elements (`new > old`). Out of memory, or a size
/// beyond `isize::MAX`, goes to `handle_alloc_error`, as with `Vec`.
fn resize(ptr: NonNull<u8>, elem: Layout, old: usize, new: usize) -> NonNull<u8> {
    let layout = match elem.size().checked_mul(new) {
        Some(size) => Layout::from_size_align(size, elem.align()),
        None => Layout::from_size_align(usize::MAX, elem.align()),
    };
    let Ok(layout) = layout else {
        alloc::alloc::handle_alloc_error(elem);
    };
    let raw = if old == 0 {
        // SAFETY: `layout` has a non-zero size: `elem` is not zero-sized (callers never
        // allocate for zero-sized elements) and `new > 0`.
        unsafe { alloc::alloc::alloc(layout) }
    } else {
        // The old size is smaller than the new one, so its layout exists too.
        let Ok(old_layout) = Layout::from_size_align(elem.size() * old, elem.align()) else {
            alloc::alloc::handle_alloc_error(layout);
        };
        // SAFETY: `ptr` was allocated by this allocator with `old_layout`, and the new
        // size is non-zero and fits `isize` (`layout` exists).
        unsafe { alloc::alloc::realloc(ptr.as_ptr(), old_layout, layout.size()) }
    };
    match NonNull::new(raw) {
        Some(p) => p,
        None => alloc::alloc::handle_alloc_error(layout),
    }
}

/// Frees the buffer at `ptr` of `cap` elements of layout `elem`, if one was allocated.
fn release(ptr: NonNull<u8>, elem: Layout, cap: usize) {
    if elem.size() == 0 || cap == 0 {
        return;
    }
    // The size was valid when `resize` allocated it.
    if let Ok(layout) = Layout::from_size_align(elem.size() * cap, elem.align()) {
        // SAFETY: `ptr` was allocated by `resize` with exactly this layout.
        unsafe { alloc::alloc::dealloc(ptr.as_ptr(), layout) };
    }
}

impl<T> Array<T> {
    /// The layout of one element, computed once per type.
    const ELEM: Layout = Layout::new::<T>();

    /// An empty array; allocates nothing.
    pub const fn new() -> Self {
        Array {
            ptr: NonNull::dangling(),
            cap: if mem::size_of::<T>() == 0 {
                usize::MAX
            } else {
                0
            },
            len: 0,
        }
    }

    /// An empty array with room for `cap` elements.
    pub fn with_capacity(cap: usize) -> Self {
        let mut array = Self::new();
        if cap > array.cap {
            array.ptr = resize(array.ptr.cast(), Self::ELEM, 0, cap).cast();
            array.cap = cap;
        }
        array
    }

    /// An array of `len` elements made by `make`.
    pub fn with_len(len: usize, mut make: impl FnMut() -> T) -> Self {
        let mut array = Self::new();
        // Allocated here, not through `with_capacity`: one frame less above `resize`.
        if len > array.cap {
            array.ptr = resize(array.ptr.cast(), Self::ELEM, 0, len).cast();
            array.cap = len;
        }
        while array.len < len {
            // SAFETY: `len <= cap`: the slot is allocated (or `T` is zero-sized) and unused.
            unsafe { array.ptr.as_ptr().add(array.len).write(make()) };
            array.len += 1;
        }
        array
    }

    /// An array of `len` copies of `value`.
    #[cfg_attr(not(feature = "seed"), allow(dead_code))] // the seed face's path buffer
    pub fn filled(len: usize, value: T) -> Self
    where
        T: Clone,
    {
        Self::with_len(len, || value.clone())
    }

    // `len`, `get` and `get_mut` are inherent, not the slice's through `Deref`: in
    // unoptimised builds that path adds `slice::from_raw_parts` and its precondition
    // check (about 300 bytes of stack) to every lookup.

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        if index < self.len {
            // SAFETY: `index < len`: the element is initialised; `&self` keeps it alive.
            Some(unsafe { &*self.ptr.as_ptr().wrapping_add(index) })
        } else {
            None
        }
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        if index < self.len {
            // SAFETY: as in `get`, and `&mut self` makes the access unique.
            Some(unsafe { &mut *self.ptr.as_ptr().wrapping_add(index) })
        } else {
            None
        }
    }

    /// Makes room for `additional` more elements without reallocating.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.len.saturating_add(additional);
        if needed > self.cap {
            self.grow_to(needed);
        }
    }

    /// Reallocates to hold at least `needed` elements (`needed > cap`; never for
    /// zero-sized `T`, whose capacity is `usize::MAX`): at least double, at least 4.
    fn grow_to(&mut self, needed: usize) {
        let cap = needed.max(self.cap.saturating_mul(2)).max(4);
        self.ptr = resize(self.ptr.cast(), Self::ELEM, self.cap, cap).cast();
        self.cap = cap;
    }

    /// Appends `value`; allocates only when the array is full.
    pub fn push(&mut self, value: T) {
        if self.len == self.cap {
            self.grow_to(self.len + 1);
        }
        // SAFETY: `len < cap`: the slot is allocated (or `T` is zero-sized) and unused.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
    }

    /// Appends `value` if there is room without reallocating; else hands it back. Never
    /// allocates, so no allocation code is in its call tree.
    pub fn push_within_capacity(&mut self, value: T) -> Result<(), T> {
        if self.len == self.cap {
            return Err(value);
        }
        // SAFETY: `len < cap`: the slot is allocated (or `T` is zero-sized) and unused.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: the element at the old `len - 1` is initialised, and no longer counted,
        // so it is read out exactly once.
        Some(unsafe { self.ptr.as_ptr().add(self.len).read() })
    }

    /// Removes the element at `index`, moving the last one into its place.
    pub fn swap_remove(&mut self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        self.len -= 1;
        // SAFETY: `index` and the old last element (`len` now) are initialised. The element
        // at `index` is read out once, and the last moves into its slot (no-op if the same),
        // leaving the old last slot uncounted.
        unsafe {
            let base = self.ptr.as_ptr();
            let value = base.add(index).read();
            ptr::copy(base.add(self.len), base.add(index), 1);
            Some(value)
        }
    }

    /// Removes the element at `index`, keeping the order of the others.
    #[cfg_attr(not(feature = "seed"), allow(dead_code))] // the seed face's registrations
    pub fn remove(&mut self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        self.len -= 1;
        // SAFETY: `index < old len`: the element is initialised and read out once; the
        // `len - index` elements after it move down one slot within the allocation.
        unsafe {
            let at = self.ptr.as_ptr().add(index);
            let value = at.read();
            ptr::copy(at.add(1), at, self.len - index);
            Some(value)
        }
    }

    /// Frees the buffer without dropping the elements: for an array whose elements own
    /// nothing any more (all `None` once every value was taken out). Skipping the drop glue
    /// keeps its call tree, that of dropping a `T`, off the caller's stack; an element that
    /// still owned something would be leaked, never freed twice.
    pub fn free_without_drop(self) {
        let this = mem::ManuallyDrop::new(self);
        release(this.ptr.cast(), Self::ELEM, this.cap);
    }
}

impl<T> Drop for Array<T> {
    fn drop(&mut self) {
        let elems: *mut [T] = &mut self[..];
        // SAFETY: `elems` are the initialised elements, dropped once: the array is gone
        // after this. (Not through `clear`: one frame less under every drop.)
        unsafe { ptr::drop_in_place(elems) };
        release(self.ptr.cast(), Self::ELEM, self.cap);
    }
}

impl<T> Deref for Array<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` elements are initialised; the pointer is non-null and
        // aligned (dangling only when nothing is allocated, with `len == 0` or zero-sized T).
        unsafe { slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for Array<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Clone> Clone for Array<T> {
    fn clone(&self) -> Self {
        let mut copy = Self::with_capacity(self.len);
        for item in self.iter() {
            copy.push(item.clone());
        }
        copy
    }
}

impl<T> Default for Array<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A UTF-8 string in an [`Array`]: a program path.
#[derive(Clone, Default)]
pub(crate) struct Text(Array<u8>);

impl Text {
    /// A copy of `s`.
    pub fn new(s: &str) -> Self {
        let mut bytes = Array::with_capacity(s.len());
        for &b in s.as_bytes() {
            // Room reserved above: never fails, and no growth code under this function.
            let _ = bytes.push_within_capacity(b);
        }
        Text(bytes)
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: the bytes were copied from a `&str` in `new` and never changed.
        unsafe { core::str::from_utf8_unchecked(&self.0) }
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::{Array, Text};
    use alloc::rc::Rc;
    use alloc::vec::Vec;
    use core::cell::Cell;

    /// Counts its drops in a shared cell.
    #[derive(Clone)]
    struct Counted(Rc<Cell<usize>>, u32);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn grows_and_keeps_every_element() {
        let mut a = Array::new();
        assert_eq!(a.capacity_for_test(), 0);
        for i in 0..1000u64 {
            a.push(i);
        }
        assert_eq!(a.len(), 1000);
        assert!(a.iter().copied().eq(0..1000));
        assert!(a.capacity_for_test() >= 1000);
        for i in (0..1000).rev() {
            assert_eq!(a.pop(), Some(i));
        }
        assert_eq!(a.pop(), None);
        assert!(a.is_empty());
    }

    #[test]
    fn with_capacity_does_not_reallocate_below_it() {
        let mut a = Array::with_capacity(64);
        let base = a.as_ptr();
        for i in 0..64u32 {
            a.push(i);
        }
        assert_eq!(a.as_ptr(), base);
        assert_eq!(a.capacity_for_test(), 64);
    }

    #[test]
    fn push_within_capacity_never_grows() {
        let mut a = Array::with_capacity(2);
        assert_eq!(a.push_within_capacity(1u8), Ok(()));
        assert_eq!(a.push_within_capacity(2), Ok(()));
        assert_eq!(a.push_within_capacity(3), Err(3));
        assert_eq!(&a[..], [1, 2]);
        assert_eq!(a.capacity_for_test(), 2);
        assert_eq!(Array::new().push_within_capacity(0u8), Err(0));
    }

    #[test]
    fn removal_keeps_order_or_swaps_in_the_last() {
        let mut a = Array::new();
        for i in 0..6u8 {
            a.push(i);
        }
        assert_eq!(a.remove(1), Some(1));
        assert_eq!(&a[..], [0, 2, 3, 4, 5]);
        assert_eq!(a.swap_remove(0), Some(0));
        assert_eq!(&a[..], [5, 2, 3, 4]);
        assert_eq!(a.swap_remove(3), Some(4));
        assert_eq!(&a[..], [5, 2, 3]);
        assert_eq!(a.remove(3), None);
        assert_eq!(a.swap_remove(7), None);
        assert_eq!(a.remove(2), Some(3));
        assert_eq!(&a[..], [5, 2]);
    }

    #[test]
    fn every_element_is_dropped_once() {
        let drops = Rc::new(Cell::new(0));
        let mut a = Array::new();
        for i in 0..100 {
            a.push(Counted(drops.clone(), i));
        }
        let copy = a.clone();
        assert_eq!(drops.get(), 0);
        drop(a.remove(10));
        drop(a.swap_remove(0));
        drop(a.pop());
        assert_eq!(drops.get(), 3);
        drop(a);
        assert_eq!(drops.get(), 100);
        assert_eq!(copy.iter().map(|c| c.1).sum::<u32>(), (0..100).sum());
        drop(copy);
        assert_eq!(drops.get(), 200);
    }

    #[test]
    fn free_without_drop_frees_the_buffer_not_the_elements() {
        let drops = Rc::new(Cell::new(0));
        let mut a = Array::new();
        for i in 0..10 {
            a.push(Some(Counted(drops.clone(), i)));
        }
        for slot in a.iter_mut() {
            drop(slot.take());
        }
        assert_eq!(drops.get(), 10);
        a.free_without_drop();
        assert_eq!(drops.get(), 10);
        Array::<u8>::new().free_without_drop();
    }

    #[test]
    fn zero_sized_elements_never_allocate() {
        let mut a = Array::new();
        for _ in 0..10_000 {
            a.push(());
        }
        assert_eq!(a.len(), 10_000);
        assert_eq!(a.capacity_for_test(), usize::MAX);
        assert_eq!(a.swap_remove(5), Some(()));
        assert_eq!(a.remove(0), Some(()));
        assert_eq!(a.pop(), Some(()));
        assert_eq!(a.len(), 9_997);
        let copy = a.clone();
        assert_eq!(copy.len(), 9_997);
    }

    #[test]
    fn empty_arrays() {
        let mut a: Array<u64> = Array::new();
        assert!(a.is_empty());
        assert_eq!(a.pop(), None);
        assert_eq!(a.remove(0), None);
        assert_eq!(a.swap_remove(0), None);
        assert!(a.clone().is_empty());
        let filled = Array::filled(0, 7u8);
        assert!(filled.is_empty());
        assert_eq!(&Array::filled(3, None::<usize>)[..], [None, None, None]);
        let _ = Array::<u64>::with_capacity(0);
    }

    #[test]
    fn text_round_trips() {
        let t = Text::new("/bin/app ü");
        assert_eq!(t.as_str(), "/bin/app ü");
        assert!(t == *"/bin/app ü");
        assert!(t == t.clone());
        assert!(Text::new("") == *"");
        assert_eq!(alloc::format!("{t}"), "/bin/app ü");
        let all: Vec<&str> = [&t].iter().map(|t| t.as_str()).collect();
        assert_eq!(all, ["/bin/app ü"]);
    }

    impl<T> Array<T> {
        fn capacity_for_test(&self) -> usize {
            self.cap
        }
    }
}
