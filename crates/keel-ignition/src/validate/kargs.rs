//! Kernel arguments: `shouldExist` and `shouldNotExist` are one list of keys to Ignition, so an
//! argument may appear once in either (which also refuses one that should both exist and not).

use crate::config::latest::KernelArguments;
use crate::report::{JsonPath, Report};

/// Duplicate, across both lists; the repeat is reported where it stands.
pub(super) fn validate_kernel_arguments(kernel_arguments: &KernelArguments, at: &JsonPath) -> Vec<Report> {
    let should_exist = kernel_arguments.should_exist.iter().flatten().enumerate().map(|(index, argument)| ("shouldExist", index, argument));
    let should_not_exist =
        kernel_arguments.should_not_exist.iter().flatten().enumerate().map(|(index, argument)| ("shouldNotExist", index, argument));
    let all: Vec<(&str, usize, &String)> = should_exist.chain(should_not_exist).collect();
    super::repeats(all.iter().map(|(_, _, argument)| *argument))
        .into_iter()
        .filter_map(|repeat| all.get(repeat))
        .map(|(list, index, argument)| {
            Report::error(at.field(list).index(*index), format!("kernel argument {argument:?} is already listed in shouldExist or shouldNotExist"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(should_exist: &[&str], should_not_exist: &[&str]) -> KernelArguments {
        let owned = |list: &[&str]| Some(list.iter().map(|argument| argument.to_string()).collect());
        KernelArguments { should_exist: owned(should_exist), should_not_exist: owned(should_not_exist) }
    }

    fn paths(kernel_arguments: &KernelArguments) -> Vec<String> {
        validate_kernel_arguments(kernel_arguments, &JsonPath::root()).iter().map(|report| report.path.to_string()).collect()
    }

    #[test]
    fn an_argument_in_both_lists_is_reported_in_should_not_exist() {
        assert_eq!(paths(&arguments(&["quiet", "x=1"], &["nosmt", "quiet"])), ["$.shouldNotExist[1]"]);
    }

    #[test]
    fn repeats_within_a_list_are_reported() {
        assert_eq!(paths(&arguments(&["a", "a"], &["b", "b"])), ["$.shouldExist[1]", "$.shouldNotExist[1]"]);
    }

    #[test]
    fn distinct_arguments_pass() {
        assert!(paths(&arguments(&["a", "a=1"], &["b"])).is_empty());
        assert!(paths(&KernelArguments::default()).is_empty());
    }
}
