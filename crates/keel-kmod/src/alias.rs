//! The kernel's module aliases are fnmatch(3) patterns (`pci:v00001AF4d*sv*sd*bc*sc*i*`,
//! `usb:v…d0[0-1]*`), matched against a device's modalias the way kmod does: `*`, `?`,
//! bracket classes with ranges and `!` or `^`, and `\` to escape; no flags, so `*` also
//! matches `/`.

/// Whether `modalias` matches `pattern`. Time is O(pattern × modalias): a `*` resumes
/// from one place only, the classic greedy fallback, which is exact for fnmatch without
/// flags.
pub fn matches(pattern: &str, modalias: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), modalias.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it currently covers up to.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match step(pattern, p, text[t]) {
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
        Some(b'\\') if p + 1 < pattern.len() => {
            if pattern[p + 1] == byte {
                Step::Matched(p + 2)
            } else {
                Step::Failed
            }
        }
        Some(&literal) if literal == byte => Step::Matched(p + 1),
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
            let high = pattern[i + 2];
            found |= (low..=high).contains(&byte);
            i += 3;
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
        assert!(matches("a[]]c", "a]c") && matches("a[a-]c", "a-c"));
        assert!(matches("a\\*c", "a*c") && !matches("a\\*c", "abc"));
        assert!(matches("a[", "a[") && !matches("a[", "ab"));
        assert!(matches("?b", "ab") && !matches("?b", "b"));
        assert!(matches("*", "") && matches("**", "x") && !matches("x", ""));
        assert!(matches("*a*a*a", "aaaa") && !matches("*a*a*a*b", "aaaaaaaaaaaaaaaa"));
        assert!(matches("a*/c", "ab/x/c"), "without flags, * crosses slashes");
    }
}
