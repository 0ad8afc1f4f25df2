// Lint: typescript-eslint's recommended type-checked rules, with two settings of ours.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'runs/', 'web/main.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ['*.js', '*.ts', 'docs/examples/*.mjs'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // Shapes print as `[${shape}]` throughout the error messages.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowArray: true, allowBoolean: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Plain JavaScript (this file, the README's examples): untyped, and the examples import the built
    // package, so type-aware rules would only see `any`; the tests run the examples instead.
    files: ['**/*.{js,mjs}'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { globals: { console: 'readonly', process: 'readonly' } },
  },
);
