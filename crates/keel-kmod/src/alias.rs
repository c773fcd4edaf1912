//! The kernel's module aliases are fnmatch(3) patterns (`pci:v00001AF4d*sv*sd*bc*sc*i*`,
//! `usb:v…d0[0-1]*`), matched against a device's modalias the way kmod does: fnmatch
//! without flags (so `*` also matches `/`), after kmod's `alias_normalize`, which makes
//! `-` and `_` the same outside bracket classes. The subset keel implements: `*`, `?`,
//! bracket classes with ranges and `!` or `^`, and `\` to escape. POSIX character classes
//! (`[[:alpha:]]`, `[[=a=]]`, `[[.a.]]`) are not: `supported` tells, so the initrd
//! builder can refuse an alias keel would misread (no kernel alias uses them today).

/// Whether keel matches `pattern` exactly as kmod would.
pub fn supported(pattern: &str) -> bool {
    !(pattern.contains("[[:") || pattern.contains("[[=") || pattern.contains("[[."))
}

/// kmod's `alias_normalize`, byte by byte.
fn normalized(byte: u8) -> u8 {
    if byte == b'-' {
        b'_'
    } else {
        byte
    }
}

/// Whether `modalias` matches `pattern`. A `*` resumes from one place only, the classic
/// greedy fallback, which is exact for fnmatch without flags: time is O(pattern ×
/// modalias) but for a `[` that never closes, each costs a scan to the pattern's end.
pub fn matches(pattern: &str, modalias: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), modalias.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it currently covers up to.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match step(pattern, p, normalized(text[t])) {
            Step::Star => {
                resume = Some((p + 1, t));
                p += 1;
                continue;
            }
            Step::Matched(next) => {
                p = next;
                t += 1;
                continue;
            }
            Step::Failed => {}
        }
        match resume {
            Some((after_star, covered)) => {
                p = after_star;
                t = covered + 1;
                resume = Some((after_star, covered + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

enum Step {
    Star,
    /// The pattern element at the position matched one byte; the next element starts here.
    Matched(usize),
    Failed,
}

fn step(pattern: &[u8], p: usize, byte: u8) -> Step {
    match pattern.get(p) {
        None => Step::Failed,
        Some(b'*') => Step::Star,
        Some(b'?') => Step::Matched(p + 1),
        Some(b'[') => match class(pattern, p + 1, byte) {
            Some((true, next)) => Step::Matched(next),
            Some((false, _)) => Step::Failed,
            // No closing bracket: fnmatch takes the `[` literally.
            None if byte == b'[' => Step::Matched(p + 1),
            None => Step::Failed,
        },
        Some(b'\\') => match pattern.get(p + 1) {
            Some(&escaped) if normalized(escaped) == byte => Step::Matched(p + 2),
            // A trailing `\` matches nothing, as in glibc.
            _ => Step::Failed,
        },
        Some(&literal) if normalized(literal) == byte => Step::Matched(p + 1),
        Some(_) => Step::Failed,
    }
}

/// A bracket class starting after its `[`: whether `byte` is in it, and where the pattern
/// goes on; `None` when the class never closes.
fn class(pattern: &[u8], start: usize, byte: u8) -> Option<(bool, usize)> {
    let mut i = start;
    let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    loop {
        let c = *pattern.get(i)?;
        // A `]` first in the class is a member, not its end.
        if c == b']' && !first {
            return Some((found != negated, i + 1));
        }
        first = false;
        let low = if c == b'\\' {
            i += 1;
            *pattern.get(i)?
        } else {
            c
        };
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&high| high != b']') {
            // The range's end may be escaped too (`[a-\z]`).
            let (high, width) = match pattern[i + 2] {
                b'\\' => (*pattern.get(i + 3)?, 4),
                high => (high, 3),
            };
            found |= (low..=high).contains(&byte);
            i += width;
        } else {
            found |= low == byte;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn kernel_alias_patterns() {
        let virtio_net = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00";
        assert!(matches("pci:v00001AF4d*sv*sd*bc*sc*i*", virtio_net));
        assert!(!matches("pci:v00008086d*sv*sd*bc*sc*i*", virtio_net));
        assert!(matches("virtio:d00000002v*", "virtio:d00000002v00001AF4"));
        assert!(!matches("virtio:d00000002v*", "virtio:d00000008v00001AF4"));
        assert!(matches("scsi:t-0x00*", "scsi:t-0x00"));
        assert!(!matches("scsi:t-0x00*", "scsi:t-0x05"));
        assert!(matches("acpi*:QEMU0002:*", "acpi:QEMU0002:"));
        let nvme = "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02";
        assert!(matches("pci:v*d*sv*sd*bc01sc08i02*", nvme));
        assert!(!matches("pci:v*d*sv*sd*bc01sc08i01*", nvme));
    }

    #[test]
    fn fnmatch_classes_and_escapes() {
        assert!(matches("usb:v0BDAp8179d0[0-1]*", "usb:v0BDAp8179d01ic"));
        assert!(!matches("usb:v0BDAp8179d0[0-1]*", "usb:v0BDAp8179d02ic"));
        assert!(matches("a[!b]c", "axc") && !matches("a[!b]c", "abc"));
        assert!(matches("a[^b]c", "axc") && !matches("a[^b]c", "abc"));
        assert!(matches("a[]]c", "a]c") && matches("a[a-]c", "aac"));
        assert!(matches("a\\*c", "a*c") && !matches("a\\*c", "abc"));
        assert!(!matches("a\\", "a\\") && !matches("a\\", "a"), "a trailing backslash matches nothing");
        assert!(matches("a[a-\\z]", "am"), "an escaped range end");
        assert!(matches("a[", "a[") && !matches("a[", "ab"));
        assert!(matches("?b", "ab") && !matches("?b", "b"));
        assert!(matches("*", "") && matches("**", "x") && !matches("x", ""));
        assert!(matches("*a*a*a", "aaaa") && !matches("*a*a*a*b", "aaaaaaaaaaaaaaaa"));
        assert!(matches("a*/c", "ab/x/c"), "without flags, * crosses slashes");
    }

    #[test]
    fn dashes_and_underscores_are_one_outside_classes() {
        assert!(matches("scsi:t-0x00*", "scsi:t_0x00") && matches("scsi:t_0x00*", "scsi:t-0x00"));
        assert!(matches("platform:foo_bar", "platform:foo-bar"));
        assert!(matches("x[a-c]", "xb") && !matches("x[-]", "x-"), "inside a class the pattern is as written, the modalias normalized");
    }

    #[test]
    fn posix_classes_are_not_supported() {
        use super::supported;
        assert!(supported("pci:v*d*sv*sd*bc01sc08i02*") && supported("usb:v0BDAp8179d0[0-1]*"));
        assert!(!supported("x[[:alpha:]]") && !supported("x[[=a=]]") && !supported("x[[.a.]]"));
    }
}
