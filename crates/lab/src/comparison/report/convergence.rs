//! Which attacks ended with their objective still falling: a cell whose attacks did not
//! converge says less about the model than about the attack's budget.

use crate::comparison::collect::Located;
use std::fmt::Write as _;

/// Cells whose attacks ended with the objective still falling (more iterations might have
/// reconstructed more).
pub fn convergence(cells: &[Located]) -> String {
    let mut lines = Vec::new();
    let mut recorded = 0;
    for l in cells {
        let c = &l.result;
        recorded += c.attacks.iter().filter(|a| a.converged.is_some()).count();
        let falling: Vec<String> = c
            .attacks
            .iter()
            .filter(|a| a.converged == Some(false))
            .map(|a| {
                format!(
                    "{} {} ({:.1} %)",
                    a.state,
                    a.client,
                    100.0 * a.final_descent.unwrap_or(f64::NAN)
                )
            })
            .collect();
        if !falling.is_empty() {
            lines.push(format!(
                "| {} | {} | {} of {} | {} |",
                c.model.slug(),
                c.variant.label,
                falling.len(),
                c.attacks.len(),
                falling.join(", ")
            ));
        }
    }
    let mut md = String::from("## Convergence of the attacks\n\n");
    if recorded == 0 {
        md.push_str("Not recorded for these cells.\n\n");
        return md;
    }
    let _ = writeln!(
        md,
        "An attack counts as not converged when its objective still fell by more than {:.0} % \
         over its last quarter of iterations (median of the last 5 % against the 5 % before \
         that quarter).\n",
        100.0 * synfed_attack::inversion::STILL_FALLING
    );
    if lines.is_empty() {
        md.push_str("Every attack converged.\n\n");
    } else {
        md.push_str("| model | variant | not converged | attacks (fall over the last quarter) |\n|---|---|---:|---|\n");
        for line in lines {
            md.push_str(&line);
            md.push('\n');
        }
        md.push('\n');
    }
    md
}
